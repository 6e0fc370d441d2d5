"""Sample from the latest checkpoint of a training workdir.

    python -m experiments.generate --workdir /tmp/gpt_tiny --prompt "The " \
        [--max_new_tokens 200 --temperature 0.8 --top_k 0 --top_p 0.95 --num_samples 1]

--temperature 0 decodes greedily.
"""
from __future__ import annotations

from absl import app, flags

flags.DEFINE_string("workdir", None, "A workdir written by experiments.train.")
flags.DEFINE_string("prompt", "", "Text to continue.")
flags.DEFINE_integer("max_new_tokens", 200, "Tokens to generate (capped by the model's max_len).")
flags.DEFINE_float("temperature", 0.8, "Softmax temperature; 0 = greedy.")
flags.DEFINE_integer("top_k", 0, "Keep the k most likely tokens (0 = all).")
flags.DEFINE_float("top_p", 0.95, "Nucleus sampling mass (1 = off).")
flags.DEFINE_integer("num_samples", 1, "Number of continuations.")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
flags.mark_flags_as_required(["workdir"])
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from zoo.data.tokenizers import get_tokenizer
    from zoo.train.loop import load_trained, sample_texts

    spec, model, params, meta = load_trained(FLAGS.workdir, FLAGS.step)
    if spec.decoder_cls is None:
        raise app.UsageError(f"model {meta['model']!r} cannot generate text.")
    try:
        samples = sample_texts(
            spec.decoder_cls(model), params, get_tokenizer(meta["tokenizer"]), FLAGS.prompt,
            num_samples=FLAGS.num_samples, max_new_tokens=FLAGS.max_new_tokens,
            max_len=getattr(model.config, "max_len", None), temperature=FLAGS.temperature,
            top_k=FLAGS.top_k, top_p=FLAGS.top_p, seed=FLAGS.seed)
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    for text in samples:
        print(text)
        print("-" * 40)


if __name__ == "__main__":
    app.run(main)
