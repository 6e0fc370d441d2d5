"""Translate text with a trained seq2seq model; optionally save its attention as a heatmap.

    python -m experiments.translate --workdir workdirs/seq2seq_lstm_bahdanau \
        "two thousand and twenty-six" [more texts ...] [--beam_size 4] [--attention_png a.png]

Characters outside the training vocabulary are an error naming them; `--unknown=unk` maps them
to the unknown token instead. `--attention_png` (models with attention over the source, e.g.
seq2seq_lstm_bahdanau) writes one heatmap per text: output characters (rows) by source
characters (columns); with several texts the index is added to the file name.
"""
from __future__ import annotations

import os

from absl import app, flags

from experiments import cli

flags.DEFINE_string("workdir", None, "A seq2seq workdir written by experiments.train.")
flags.DEFINE_integer("beam_size", 1, "1 = greedy decoding.", lower_bound=1)
flags.DEFINE_float("length_penalty", 0.6, "GNMT length-penalty exponent for beam search.",
                   lower_bound=0.0)
flags.DEFINE_enum("unknown", "error", ["error", "unk"], "Characters the vocabulary lacks.")
flags.DEFINE_string("attention_png", None, "Save the attention weights as a PNG heatmap.")
flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).", lower_bound=0)
flags.mark_flags_as_required(["workdir"])


def main(argv):
    texts = argv[1:]
    if not texts:
        raise app.UsageError("give the text(s) to translate as arguments.")
    workdir = cli.existing_workdir(flags.FLAGS.workdir)
    from zoo import jax_runtime
    from zoo.eval.translator import load_translator, save_heatmap

    jax_runtime.enable_compilation_cache()
    translator = load_translator(workdir, flags.FLAGS.step)
    try:
        outputs = translator(texts, beam_size=flags.FLAGS.beam_size,
                             length_penalty=flags.FLAGS.length_penalty,
                             unknown=flags.FLAGS.unknown)
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    for i, (text, output) in enumerate(zip(texts, outputs)):
        print(f"{text} -> {output}", flush=True)
        if flags.FLAGS.attention_png:
            path = flags.FLAGS.attention_png
            if len(texts) > 1:
                root, ext = os.path.splitext(path)
                path = f"{root}_{i}{ext or '.png'}"
            try:
                weights = translator.attention(text, output)
            except ValueError as e:
                raise app.UsageError(str(e)) from e
            save_heatmap(weights, text, output, path)
            print(f"attention heatmap: {path}", flush=True)


if __name__ == "__main__":
    cli.run(main)
