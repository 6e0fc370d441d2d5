"""Sample from the latest checkpoint of a training workdir.

    python -m experiments.generate --workdir /tmp/gpt_tiny --prompt "The " \
        [--max_new_tokens 200 --temperature 0.8 --top_k 0 --top_p 0.95 --num_samples 1]

--temperature 0 decodes greedily. The prompt is encoded with the tokenizer the model was trained
with (bytes, or the workdir's SentencePiece model `tokenizer.model`). For an encoder-decoder
workdir (transformer_*, seq2seq_*) the prompt is the source text and the output its
translation: greedy at temperature 0, beam search with --beam_size > 1, otherwise sampled token
by token until EOS.

--workdir may also be a Hugging Face GPT-2 directory (what `save_pretrained()` writes:
config.json, the weights and the tokenizer files), read by `zoo.convert.hf` with the tokenizer
beside it (`zoo.convert.hf_tokenizer`: tokenizer.json, or vocab.json + merges.txt):

    python -m experiments.generate --workdir path/to/gpt2 --prompt "The zoo" --temperature 0
"""
from __future__ import annotations

import math
import os

from absl import app, flags

from experiments import cli

flags.DEFINE_string("workdir", None, "A workdir written by experiments.train, or a Hugging "
                    "Face GPT-2 directory (config.json, weights, tokenizer files).")
flags.DEFINE_string("prompt", "", "Text to continue.")
flags.DEFINE_integer("max_new_tokens", 200, "Tokens to generate (capped by the model's max_len).",
                     lower_bound=1)
flags.DEFINE_float("temperature", 0.8, "Softmax temperature; 0 = greedy.", lower_bound=0.0)
flags.register_validator("temperature", math.isfinite,
                         message="--temperature must be a finite number >= 0 (0 = greedy).")
flags.DEFINE_integer("top_k", 0, "Keep the k most likely tokens (0 = all).", lower_bound=0)
flags.DEFINE_float("top_p", 0.95, "Nucleus sampling mass in (0, 1] (1 = off).")
flags.DEFINE_integer("num_samples", 1, "Number of continuations.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Sampling seed, in [0, 2**32).", lower_bound=0,
                     upper_bound=2**32 - 1)
flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).", lower_bound=0)
flags.DEFINE_integer("beam_size", 1, "Encoder-decoder models: beam search when > 1.",
                     lower_bound=1)
flags.mark_flags_as_required(["workdir"])
flags.register_validator("top_p", lambda p: 0 < p <= 1,
                         message="must be in (0, 1] (1 turns nucleus sampling off).")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; the text to continue is --prompt.")
    workdir = cli.existing_workdir(FLAGS.workdir)
    from zoo import jax_runtime

    jax_runtime.enable_compilation_cache()
    from zoo.eval.translator import translator_from
    from zoo.decode.text import sample_texts
    from zoo.train.workdir import load_tokenizer, load_trained

    if is_hf_directory(workdir):
        spec, model, params, tokenizer, meta = load_hf_directory(workdir)
    else:
        spec, model, params, meta = load_trained(workdir, FLAGS.step)
        if spec.task == "seq2seq":
            for text in translate_prompt(translator_from(workdir, spec, model, params, meta)):
                print(f"{FLAGS.prompt} -> {text}")
            return
        tokenizer = load_tokenizer(workdir, meta, model)
    if spec.decoder_cls is None:
        raise app.UsageError(f"model {meta['model']!r} ({spec.task}) cannot generate text: "
                             "generate continues causal language models and translates with "
                             "seq2seq ones; pass the workdir of such a run.")
    try:
        samples = sample_texts(
            spec.decoder_cls(model), params, tokenizer, FLAGS.prompt,
            num_samples=FLAGS.num_samples, max_new_tokens=FLAGS.max_new_tokens,
            max_len=model.config.max_len, temperature=FLAGS.temperature,
            top_k=FLAGS.top_k, top_p=FLAGS.top_p, seed=FLAGS.seed)
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    for text in samples:
        print(text)
        print("-" * 40)


def is_hf_directory(path: str) -> bool:
    """A Hugging Face checkpoint directory (config.json, no training checkpoints)."""
    return (os.path.isfile(os.path.join(path, "config.json"))
            and not os.path.isdir(os.path.join(path, "checkpoints")))


def load_hf_directory(path: str):
    """(spec, model, params, tokenizer, meta) of a Hugging Face checkpoint directory; its
    tokenizer must not have more ids than the model's vocab_size."""
    from zoo.convert.hf import load_hf_checkpoint
    from zoo.convert.hf_tokenizer import load_hf_tokenizer
    from zoo.errors import CheckpointError
    from zoo.models import get_spec

    if FLAGS.step is not None:
        raise app.UsageError(f"--step selects a training checkpoint; {path} is a Hugging Face "
                             "directory with one set of weights.")
    try:
        name, model, params = load_hf_checkpoint(path)
        tokenizer = load_hf_tokenizer(path)
    except (FileNotFoundError, ValueError) as e:
        raise CheckpointError(f"cannot load the Hugging Face checkpoint in {path}: {e}") from e
    if tokenizer.vocab_size > model.config.vocab_size:
        raise CheckpointError(f"the tokenizer in {path} has {tokenizer.vocab_size} ids but the "
                              f"model's vocab_size is {model.config.vocab_size}; save the "
                              "tokenizer that belongs to these weights beside them.")
    return get_spec(name), model, params, tokenizer, {"model": name}


def translate_prompt(translator) -> list[str]:
    """Outputs of an encoder-decoder workdir for FLAGS.prompt (the source text)."""
    import jax
    import jax.numpy as jnp

    from zoo.decode.sampling import generate
    from zoo.decode.translate import encode_sources

    if not FLAGS.prompt:
        raise app.UsageError("--prompt is empty: for a seq2seq workdir it is the source text to "
                             "translate; pass one.")
    prompts = [FLAGS.prompt] * FLAGS.num_samples
    try:
        if FLAGS.temperature == 0 or FLAGS.beam_size > 1:
            return translator(prompts, beam_size=FLAGS.beam_size, max_len=FLAGS.max_new_tokens)
        seq_len = translator.config["seq_len"]
        sources = encode_sources(translator.vocab, prompts, seq_len,
                                 reverse_source=translator.config.get("reverse_source", False))
        tokens = generate(translator.decoder, translator.params, jnp.asarray(sources),
                          jax.random.key(FLAGS.seed), max_new_tokens=min(FLAGS.max_new_tokens,
                                                                         seq_len),
                          temperature=FLAGS.temperature, top_k=FLAGS.top_k, top_p=FLAGS.top_p,
                          num_valid_tokens=translator.vocab.size)
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    return [translator.vocab.decode(row) for row in tokens]


if __name__ == "__main__":
    cli.run(main)
