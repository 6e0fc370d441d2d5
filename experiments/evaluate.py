"""Decode a split with a trained seq2seq model and score it (exact match, token accuracy, BLEU).

    python -m experiments.evaluate --workdir workdirs/seq2seq_lstm_bahdanau \
        [--split test --beam_size 1 --length_penalty 0.6 --max_examples 0 --step N]

Prints a few examples, then the metrics as one JSON object on the last line. The dataset,
vocabulary (the workdir's vocab.json) and preprocessing are those the model was trained with.
"""
from __future__ import annotations

import json
import time

from absl import app, flags

from experiments import cli

flags.DEFINE_string("workdir", None, "A seq2seq workdir written by experiments.train.")
flags.DEFINE_string("split", "test", "Split of the training dataset to decode.")
flags.DEFINE_integer("beam_size", 1, "1 = greedy decoding.", lower_bound=1)
flags.DEFINE_float("length_penalty", 0.6, "GNMT length-penalty exponent for beam search.",
                   lower_bound=0.0)
flags.DEFINE_integer("batch_size", 250, "Sources decoded at once.", lower_bound=1)
flags.DEFINE_integer("max_examples", 0, "Decode only the first N examples (0 = all).",
                     lower_bound=0)
flags.DEFINE_integer("num_show", 5, "Examples printed before the metrics.", lower_bound=0)
flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).", lower_bound=0)
flags.mark_flags_as_required(["workdir"])
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}.")
    workdir = cli.existing_workdir(FLAGS.workdir)
    from zoo import jax_runtime

    jax_runtime.enable_compilation_cache()
    from zoo.data.pipelines.seq2seq_batches import load_pairs
    from zoo.eval.translation_metrics import translation_metrics
    from zoo.eval.translator import load_translator

    translator = load_translator(workdir, FLAGS.step)
    config = translator.config
    sources, references = load_pairs(config["dataset"], FLAGS.split, config["data_dir"],
                                     source_key=config.get("source_key"),
                                     target_key=config.get("target_key"))
    if FLAGS.max_examples:
        sources, references = sources[:FLAGS.max_examples], references[:FLAGS.max_examples]
    start = time.perf_counter()
    outputs = translator(sources, beam_size=FLAGS.beam_size, length_penalty=FLAGS.length_penalty,
                         batch_size=FLAGS.batch_size, unknown="unk")
    seconds = time.perf_counter() - start
    for source, output, reference in list(zip(sources, outputs, references))[:FLAGS.num_show]:
        print(f"{source!r} -> {output!r}  (reference {reference!r})")
    metrics = translation_metrics(translator.vocab, outputs, references)
    metrics.update(model=translator.meta["model"], step=translator.step, split=FLAGS.split,
                   beam_size=FLAGS.beam_size, decode_seconds=round(seconds, 2))
    print(json.dumps(metrics), flush=True)


if __name__ == "__main__":
    cli.run(main)
