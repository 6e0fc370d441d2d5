"""Score a trained model on a split of its dataset; the metrics are one JSON object on the last
line.

    python -m experiments.evaluate --workdir workdirs/seq2seq_lstm_bahdanau \
        [--split test --beam_size 1 --length_penalty 0.6 --max_examples 0 --step N]
    python -m experiments.evaluate --workdir workdirs/gpt_tiny_spm --split validation

A seq2seq workdir decodes the split (a few examples printed first) and reports exact match,
token accuracy and BLEU. A language-model workdir (GPT, RNN LMs, BERT MLM) reports the split's
loss, accuracy and perplexity per token and `loss_per_byte` (nats per UTF-8 byte of the split's
text, comparable across tokenizers). The dataset, vocabulary (the workdir's vocab.json or
tokenizer.model) and preprocessing are those the model was trained with.
"""
from __future__ import annotations

import json
import time

from absl import app, flags

from experiments import cli

flags.DEFINE_string("workdir", None, "A seq2seq or language-model workdir written by "
                    "experiments.train.")
flags.DEFINE_string("split", None, "Split of the training dataset to score (default: test for "
                    "seq2seq, the run's eval_split for language models).")
flags.DEFINE_integer("beam_size", 1, "1 = greedy decoding.", lower_bound=1)
flags.DEFINE_float("length_penalty", 0.6, "GNMT length-penalty exponent for beam search.",
                   lower_bound=0.0)
flags.DEFINE_integer("batch_size", 250, "Sources decoded (or LM windows scored) at once.",
                     lower_bound=1)
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
    from zoo.eval.translator import translator_from
    from zoo.train.workdir import load_trained

    trained = load_trained(workdir, FLAGS.step)
    if trained[0].task != "seq2seq":
        print(json.dumps(score_lm(workdir, *trained)), flush=True)
        return
    translator = translator_from(workdir, *trained)
    config = translator.config
    split = FLAGS.split or "test"
    sources, references = load_pairs(config["dataset"], split, config["data_dir"],
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
    metrics.update(model=translator.meta["model"], step=translator.step, split=split,
                   beam_size=FLAGS.beam_size, decode_seconds=round(seconds, 2))
    print(json.dumps(metrics), flush=True)


def score_lm(workdir: str, spec, model, params, meta) -> dict:
    """Loss / accuracy / perplexity per token of a language model on a split (every token but
    the first predicted once, through the training's windows) and loss per UTF-8 byte."""
    import jax
    import ml_collections
    import numpy as np

    from zoo.data.pipelines.lm_batches import LMWindows, load_texts, text_bytes, token_stream
    from zoo.train.workdir import build_model, load_tokenizer

    config = ml_collections.ConfigDict(meta["config"])
    task = build_model(config)[3]
    tokenizer = load_tokenizer(workdir, meta, model)
    split = FLAGS.split or config.get("eval_split", "validation")
    texts = load_texts(config.dataset, split, config.get("data_dir"),
                       config.get("text_key") or "text")
    if FLAGS.max_examples:
        texts = texts[:FLAGS.max_examples]
    stream = token_stream(texts, tokenizer)
    windows = LMWindows(stream, config.seq_len, pad_last=True)
    sums_of = jax.jit(lambda p, batch: task.loss(model.apply, p, batch, jax.random.key(0),
                                                 train=False)[1])
    totals = None
    for start in range(0, len(windows), FLAGS.batch_size):
        rows = [windows[i] for i in range(start, min(start + FLAGS.batch_size, len(windows)))]
        batch = {k: np.stack([row[k] for row in rows]) for k in rows[0]}  # (B, T) each
        task.check_batch(batch, model.config)
        sums = jax.device_get(sums_of(params, batch))
        totals = sums if totals is None else jax.tree.map(np.add, totals, sums)
    metrics = task.finalize(totals)
    predicted = len(stream) - 1
    if task.name != "masked_lm":  # whose loss covers the masked tokens only
        metrics["loss_per_byte"] = metrics["loss"] * predicted / text_bytes(texts)
    metrics.update(model=meta["model"], step=meta["step"], split=split,
                   tokenizer=type(tokenizer).__name__, tokens=predicted,
                   bytes=text_bytes(texts))
    return metrics


if __name__ == "__main__":
    cli.run(main)
