"""What a data pipeline hands the training loop."""
from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class Data:
    """Train and eval batch streams (`get(i)` -> host batch i), the tokenizer, and baselines.

    `baselines` are reference numbers printed next to the final eval metrics, e.g.
    {"unigram_entropy": nats/token} for language models or {"majority_accuracy": fraction}
    for classifiers and taggers.
    """

    train: Any
    eval: Any
    tokenizer: Any
    baselines: dict[str, float]
    # A vocabulary built from the data (seq2seq's characters, a SentencePiece model), with
    # `save(path)`: the loop writes it into the workdir (`zoo.train.workdir.save_built_vocab`),
    # where generate / evaluate / translate read it. None otherwise.
    built_vocab: Any = None
