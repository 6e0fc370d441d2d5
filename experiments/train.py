"""Train any registered model through the shared step.

    python -m experiments.train --config experiments/configs/gpt_tiny.py --workdir /tmp/gpt_tiny \
        [--config.key=value ...]

Rerunning on the same workdir resumes from its latest checkpoint. Several processes (hosts) run
the same command each; jax.distributed starts from the cluster's environment (SLURM, Open MPI,
Kubernetes, TPU VM) or --config.coordinator_address / num_processes / process_id (README,
"Training on many accelerators"). A bad flag, config or override is one line `error: ...` on
stderr (exit 2; other expected failures exit 1); --debug shows the traceback instead.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from experiments import cli
from experiments.config_check import check_config_argv
from zoo.errors import WorkdirError

flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics (resumed if it has any).")
config_flags.DEFINE_config_file("config", None, "Path to an experiments/configs/*.py file.",
                                lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def final_report(metrics: dict, baselines: dict) -> str:
    """One line comparing the final eval metrics with the data's baselines."""
    if not metrics:
        return "no evaluation ran"
    if "unigram_entropy" in baselines and "loss" in metrics:
        loss, entropy = metrics["loss"], baselines["unigram_entropy"]
        gap = 100 * (1 - loss / entropy)
        relation = f"{gap:.1f}% below" if gap >= 0 else f"{-gap:.1f}% above"
        per_byte = (f" = {loss_per_byte(metrics, baselines):.4f} nats/byte"
                    if "eval_bytes_per_token" in baselines else "")
        return (f"final validation loss {loss:.4f} nats/token{per_byte} vs unigram entropy "
                f"{entropy:.4f} ({relation})")
    if "majority_accuracy" in baselines and "accuracy" in metrics:
        return (f"final held-out accuracy {metrics['accuracy']:.4f} vs majority-class baseline "
                f"{baselines['majority_accuracy']:.4f}")
    return "final eval: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items())


def loss_per_byte(metrics: dict, baselines: dict) -> float:
    """The eval loss in nats per UTF-8 byte of the eval text (total loss / total bytes), which
    compares models with different tokenizers: loss per token / bytes per token."""
    return metrics["loss"] / baselines["eval_bytes_per_token"]


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; overrides are --config.key=value.")
    if not FLAGS.workdir.strip():
        raise app.UsageError("--workdir is empty; pass the directory to train in (it is created "
                             "if missing, and resumed if it holds checkpoints).")
    if os.path.exists(FLAGS.workdir) and not os.path.isdir(FLAGS.workdir):
        raise WorkdirError(f"--workdir {FLAGS.workdir!r} is a file, not a directory; pass a new "
                           "or existing directory.")
    from zoo.train.distributed import initialize_distributed

    initialize_distributed(FLAGS.config)  # before any JAX computation
    from zoo.train.loop import train_and_evaluate

    summary = train_and_evaluate(FLAGS.config, FLAGS.workdir)
    if summary["is_chief"]:
        print(final_report(summary["eval"], summary["baselines"]), flush=True)
    if summary["interrupted"]:
        sys.exit(143 if summary["interrupted"] == "SIGTERM" else 130)


if __name__ == "__main__":
    cli.run(main, precheck=check_config_argv)
