"""Training batches as a grain iterator: read ahead in the background, resumable exactly.

    with TrainIterator(data.train, start=position, workers=2, prefetch=2) as batches:
        batch = next(batches)        # this process's rows of global batch `batches.position`
        state = batches.get_state()  # JSON-able; set_state(state) continues at the next batch

The iterator runs grain's `IterDataset` over `BatchStream.local_batches` from batch `start`:
with `workers=0`, one background thread reads up to `prefetch` batches ahead of the train step;
with `workers=W > 0`, W worker processes (grain's `mp_prefetch`, spawned) build batches
round-robin, each holding up to `prefetch` finished batches. Either way the batches are those of
`stream.get(start)`, `stream.get(start + 1)`, ... and `get_state()` records the batches handed
out, not those read ahead, so a restored iterator continues with exactly the next one.
`zoo.data.pipelines.loader_checkpoint` saves the state as an item of an orbax checkpoint.

Worker processes stop on `close()` (or leaving the `with` block); iterators still open when the
interpreter exits are closed then. Workers ignore SIGINT: Ctrl-C is the training process's to
handle.
"""
from __future__ import annotations

import atexit
import gc
import signal
import weakref
from typing import Any

import grain
import numpy as np
from absl import flags

from zoo.data.pipelines.batch_stream import Batch, BatchStream
from zoo.data.pipelines.config_fields import config_field
from zoo.errors import CheckpointError, ConfigError

_OPEN: weakref.WeakSet[TrainIterator] = weakref.WeakSet()


@atexit.register
def _close_open_iterators() -> None:
    for iterator in list(_OPEN):
        iterator.close()
    gc.collect()  # grain's iterators hold reference cycles; collect them while modules live


def _allow_grain_workers() -> None:
    # grain 0.2.18 reads an absl flag when it starts worker processes and fails where flags
    # were never parsed (every program not started by absl.app; google/grain#1355).
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _leave_interrupts_to_the_trainer(worker_index: int, worker_count: int) -> None:
    """Runs in each worker process: Ctrl-C (SIGINT to the whole process group) is the training
    process's to handle (it checkpoints, then closes the iterator, which stops the workers)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class TrainIterator(grain.DatasetIterator):
    """This process's batches of `stream` from global batch `start` on, prefetched.

    workers: worker processes building batches (0: a thread of this process does).
    prefetch: batches read ahead, per worker process when there are workers (0: none, each
      batch is read when asked for).
    """

    def __init__(self, stream: BatchStream, *, start: int = 0, workers: int = 0,
                 prefetch: int = 2):
        super().__init__()
        for name, value in (("start", start), ("workers", workers), ("prefetch", prefetch)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ConfigError(f"TrainIterator {name} must be an integer >= 0; got {value!r}.")
        self.stream, self.workers, self.prefetch = stream, int(workers), int(prefetch)
        self._iterator: grain.DatasetIterator | None = None
        self._open(int(start))

    def _open(self, start: int) -> None:
        """(Re)starts the grain pipeline at global batch `start`."""
        self.close()
        read = grain.ReadOptions(num_threads=1 if self.prefetch else 0,
                                 prefetch_buffer_size=self.prefetch)
        ds = self.stream.local_batches[start:].to_iter_dataset(read)
        if self.workers:
            _allow_grain_workers()
            ds = ds.mp_prefetch(grain.MultiprocessingOptions(
                num_workers=self.workers, per_worker_buffer_size=max(self.prefetch, 1)),
                worker_init_fn=_leave_interrupts_to_the_trainer)
        self.start, self.position = start, start
        self._iterator = iter(ds)
        self._closed = False
        _OPEN.add(self)

    def __next__(self) -> Batch:
        if self._closed:
            raise ValueError("this TrainIterator is closed; set_state() reopens it.")
        batch = next(self._iterator)
        self.position += 1
        # Workers hand batches over in shared memory; plain arrays free it at once.
        return {key: np.array(value) for key, value in batch.items()}

    def get_state(self) -> dict[str, Any]:
        """{"position": the next global batch, the pipeline's start and worker count, grain's
        own iterator state, and the stream's signature}: JSON-able."""
        if self._closed:
            raise ValueError("this TrainIterator is closed: its state was that of the last batch "
                             "it handed out before close(); save the state before closing.")
        return {"position": self.position, "start": self.start, "workers": self.workers,
                "grain": self._iterator.get_state(), "stream": self.stream.signature}

    def set_state(self, state: dict[str, Any]) -> None:
        """Continues after the last batch handed out by the iterator that saved `state`.

        A state saved with another worker count restarts the pipeline at its position (the
        batches are a pure function of the position, so nothing changes but the read-ahead).
        """
        saved = state.get("stream")
        if saved != self.stream.signature:
            raise CheckpointError(
                f"the saved data iterator state belongs to another stream ({saved}; this run "
                f"reads {self.stream.signature}); resume with the config that wrote it or use a "
                "fresh workdir.")
        if state["workers"] != self.workers:
            self._open(int(state["position"]))
            return
        if state["start"] != self.start or self._closed:
            self._open(int(state["start"]))
        self._iterator.set_state(state["grain"])
        self.position = int(state["position"])

    def start_prefetch(self) -> None:
        if not self._closed:
            self._iterator.start_prefetch()

    def close(self) -> None:
        """Stops the read-ahead thread or worker processes; idempotent. `set_state` reopens."""
        if getattr(self, "_iterator", None) is not None:
            self._iterator.close()
        # Dropped now, not at interpreter exit, when grain's __del__ can no longer run.
        self._iterator = None
        self._closed = True
        _OPEN.discard(self)

    def __enter__(self) -> TrainIterator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __str__(self) -> str:
        return (f"TrainIterator(position={self.position}, workers={self.workers}, "
                f"prefetch={self.prefetch})")


def train_iterator(stream: BatchStream, config: Any, start: int = 0) -> TrainIterator:
    """The run's train iterator from global batch `start`: `config.data_workers` worker
    processes (default 0) and `config.data_prefetch` batches read ahead (default 2)."""
    return TrainIterator(stream, start=start, workers=config_field(config, "data_workers", 0),
                         prefetch=config_field(config, "data_prefetch", 2))
