"""The data pipeline of each task: `create_data(task_name, config, global_batch)` -> `Data`.

A pipeline reads a prepared TFDS split by name (`tfds_splits`: any TFDS dataset prepared as
array_record in the data dir, never downloaded; the embedded datasets come from
`zoo.data.builders`), tokenizes it (`tokenizers`, `char_vocab`) and serves host batches by
index (`batch_stream`): `lm_batches` (causal, bidirectional and masked LM), `labelled_batches`
(classification, tagging), `seq2seq_batches` (seq2seq). `sharding` splits a host batch across
local devices.

The data dir is `config.data_dir`, else $ZOO_DATA_DIR, else ~/.cache/zoo/tensorflow_datasets
(`zoo.data.builders.preparation`). Every batch has "weights": per token (B, T), or per example
(B,) for classification. Train streams drop each pass's last partial batch; eval streams cover
every example once, their last batch padded to the global batch with rows of weight 0.
"""
from __future__ import annotations

import importlib
from typing import Any

from zoo.data.pipelines.bundle import Data

# task name -> "module:function"; imported lazily so a task's pipeline loads only when used.
PIPELINES: dict[str, str] = {
    "causal_lm": "zoo.data.pipelines.lm_batches:create_lm_data",
    "classification": "zoo.data.pipelines.labelled_batches:create_classification_data",
    "tagging": "zoo.data.pipelines.labelled_batches:create_tagging_data",
    "bidirectional_lm": "zoo.data.pipelines.lm_batches:create_lm_data",
    "masked_lm": "zoo.data.pipelines.lm_batches:create_lm_data",
    "seq2seq": "zoo.data.pipelines.seq2seq_batches:create_seq2seq_data",
}


def create_data(task_name: str, config: Any, global_batch_size: int, *, process_index: int = 0,
                process_count: int = 1) -> Data:
    if task_name not in PIPELINES:
        raise ValueError(f"no data pipeline for task {task_name!r}; pipelines exist for "
                         f"{', '.join(sorted(PIPELINES))}.")
    module, function = PIPELINES[task_name].split(":")
    create = getattr(importlib.import_module(module), function)
    return create(config, global_batch_size, process_index=process_index,
                  process_count=process_count)
