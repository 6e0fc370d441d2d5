"""The grain train iterator: per-process shards, prefetch, exact resume (also through an orbax
checkpoint and with worker processes), clean worker shutdown."""
import json
import multiprocessing
import os
import subprocess
import sys
import textwrap

import grain
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from zoo.data.pipelines.batch_stream import BatchStream, eval_stream
from zoo.data.pipelines.lm_batches import LMWindows
from zoo.data.pipelines.loader import TrainIterator, train_iterator
from zoo.data.pipelines.loader_checkpoint import (data_item_handlers, data_save_args, has_data,
                                                  restore_data)
from zoo.errors import CheckpointError, ConfigError

T = 4  # tokens per window; window i of `_windows(n)` holds the ids [i*T, (i+1)*T)
EPOCH = 6  # global batches per epoch of `_stream()`: 48 windows in batches of 8


def _windows(n: int) -> LMWindows:
    return LMWindows(np.arange(n * T + 1, dtype=np.int32), T)


def _stream(seed: int = 3, **kwargs) -> BatchStream:
    return BatchStream(_windows(48), 8, seed=seed, **kwargs)


def _ids(batch) -> np.ndarray:  # (B,) which window each row is
    return batch["inputs"][:, 0] // T


def _assert_same(batches, expected):
    assert len(batches) == len(expected)
    for got, want in zip(batches, expected):
        assert sorted(got) == sorted(want)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


@pytest.mark.parametrize("process_count", [2, 4])
def test_process_rows_are_the_rows_of_the_global_batch(process_count):
    """Process p's batch i = rows [p*G/P, (p+1)*G/P) of global batch i, for train and eval."""
    windows = _windows(48)
    reference = grain.MapDataset.source(windows).shuffle(seed=3).repeat().batch(8)
    shards = [_stream(process_index=p, process_count=process_count)
              for p in range(process_count)]
    for i in (0, 5, 6, 13):
        np.testing.assert_array_equal(
            np.concatenate([s.get(i)["inputs"] for s in shards]), reference[i]["inputs"])
        assert all(s.get(i)["inputs"].shape == (8 // process_count, T) for s in shards)

    evals = [eval_stream(_windows(50), 8, process_index=p, process_count=process_count)
             for p in range(process_count)]
    assert {len(e) for e in evals} == {7}  # ceil(50 / 8)
    real = np.concatenate([_ids(b)[b["weights"][:, 0] > 0] for e in evals
                           for b in (e.get(i) for i in range(len(e)))])
    np.testing.assert_array_equal(np.sort(real), np.arange(50))  # each example once


@pytest.mark.parametrize("process_count", [2, 4])
def test_process_shards_cover_each_example_once_per_epoch(process_count):
    shards = [TrainIterator(_stream(process_index=p, process_count=process_count))
              for p in range(process_count)]
    seen = [[_ids(next(it)) for _ in range(2 * EPOCH)] for it in shards]  # [process][batch]
    for it in shards:
        it.close()
    for epoch in range(2):
        ids = [np.concatenate(batches[epoch * EPOCH:(epoch + 1) * EPOCH]) for batches in seen]
        np.testing.assert_array_equal(np.sort(np.concatenate(ids)), np.arange(48))
        assert all(len(set(a) & set(b)) == 0 for a in ids for b in ids if a is not b)
    assert not np.array_equal(np.concatenate(seen[0][:EPOCH]),
                              np.concatenate(seen[0][EPOCH:]))  # reshuffled each epoch


@pytest.mark.parametrize("workers", [0, 2])
def test_prefetched_batches_and_exact_resume(workers):
    """Batches equal `get(i)`; a state saved mid-epoch or after an epoch boundary (through
    JSON) continues with exactly the next batch, across later epoch boundaries too."""
    stream = _stream()
    with TrainIterator(stream, start=1, workers=workers, prefetch=3) as it:
        first = _take(it, 2)
        mid_epoch = json.loads(json.dumps(it.get_state()))  # position 3
        middle = _take(it, 4)
        next_epoch = json.loads(json.dumps(it.get_state()))  # position 7, in epoch 1
        rest = _take(it, 6)
    _assert_same(first + middle + rest, [stream.get(i) for i in range(1, 13)])
    assert (mid_epoch["position"], next_epoch["position"]) == (3, 7)

    resumed = TrainIterator(stream, start=0, workers=workers, prefetch=3)
    resumed.set_state(mid_epoch)  # saved by a pipeline with another start
    _assert_same(_take(resumed, 10), middle + rest)
    resumed.set_state(next_epoch)  # while reading ahead: what was read ahead is dropped
    assert resumed.position == 7
    _assert_same(_take(resumed, 6), rest)
    resumed.close()

    with TrainIterator(stream, workers=0) as other_workers:  # elastic in the worker count
        other_workers.set_state(next_epoch if workers else mid_epoch)
        _assert_same(_take(other_workers, 2), (rest if workers else middle)[:2])


@pytest.mark.parametrize("workers", [0, 2])
def test_orbax_checkpoint_holds_the_iterator_state(tmp_path, workers):
    """A CheckpointManager with a state item and the data item restores a fresh iterator to
    exactly the next batch; closing the iterator stops its worker processes."""
    stream = _stream()
    manager = ocp.CheckpointManager(
        tmp_path, item_handlers={"state": ocp.StandardCheckpointHandler(),
                                 **data_item_handlers()},
        options=ocp.CheckpointManagerOptions(enable_async_checkpointing=False))
    state = {"w": np.arange(3.0, dtype=np.float32), "step": np.array(5, np.int32)}
    before = set(multiprocessing.active_children())
    with TrainIterator(stream, start=2, workers=workers) as it:
        _take(it, 3)  # position 5, one batch before the epoch boundary
        manager.save(5, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                **data_save_args(it)))
        manager.wait_until_finished()
        uninterrupted = _take(it, 4)
    manager.save(6, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
    manager.wait_until_finished()

    with TrainIterator(stream, workers=workers) as fresh:
        assert not has_data(manager, 6) and not restore_data(manager, 6, fresh)
        assert restore_data(manager, 5, fresh)
        restored = manager.restore(5, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(state)))["state"]
        assert fresh.position == 5
        _assert_same(_take(fresh, 4), uninterrupted)
        assert len(set(multiprocessing.active_children()) - before) == workers
    assert set(multiprocessing.active_children()) - before == set()  # close() stopped them
    with pytest.raises(ValueError, match="closed"):
        next(fresh)
    np.testing.assert_array_equal(restored["w"], state["w"])
    assert "process_0-of-1.json" in os.listdir(tmp_path / "5" / "data")  # one file per process
    manager.close()


def test_state_of_another_stream_is_refused():
    with TrainIterator(_stream(seed=3)) as it:
        next(it)
        state = it.get_state()
    with TrainIterator(_stream(seed=4)) as other, pytest.raises(CheckpointError, match="seed"):
        other.set_state(state)


@pytest.mark.slow
def test_workers_survive_ctrl_c_and_do_not_hang_the_exit(tmp_path):
    """Ctrl-C (SIGINT to the process group) is left to the training process: the workers go on
    and the batches stay exact. A program that never closes its iterator still exits at once,
    without errors or leaked shared memory (open iterators are closed at interpreter exit)."""
    script = textwrap.dedent("""
        import os, signal, time
        import numpy as np
        from zoo.data.pipelines.batch_stream import BatchStream
        from zoo.data.pipelines.lm_batches import LMWindows
        from zoo.data.pipelines.loader import TrainIterator

        if __name__ == "__main__":
            received = []
            signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
            stream = BatchStream(LMWindows(np.arange(400, dtype=np.int32), 4), 8, seed=0)
            it = TrainIterator(stream, workers=2)
            batches = [next(it) for _ in range(3)]
            os.killpg(os.getpgid(0), signal.SIGINT)
            time.sleep(0.5)
            batches += [next(it) for _ in range(3)]
            exact = all(np.array_equal(b["inputs"], stream.get(i)["inputs"])
                        for i, b in enumerate(batches))
            print("interrupts", len(received), "exact", exact)
        """)
    path = tmp_path / "unclosed.py"
    path.write_text(script)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": repo + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, env=env,
                         timeout=300, start_new_session=True)  # its SIGINT reaches only its group
    assert run.returncode == 0, run.stderr
    assert "interrupts 1 exact True" in run.stdout, run.stdout + run.stderr
    assert "Exception ignored" not in run.stderr and "leaked" not in run.stderr, run.stderr


def test_run_config_fields():
    config = ml_collections.ConfigDict({"data_workers": 0, "data_prefetch": 1})
    with train_iterator(_stream(), config, start=4) as it:
        assert (it.workers, it.prefetch, it.position) == (0, 1, 4)
        _assert_same([next(it)], [_stream().get(4)])
    with pytest.raises(ConfigError, match="workers"):
        TrainIterator(_stream(), workers=-1)


@pytest.mark.slow
def test_the_loop_saves_the_iterator_state_and_a_resume_with_workers_is_exact(tmp_path):
    """The training loop with a worker process: stopped after a checkpoint, which holds the
    iterator's state, and resumed, it ends bit-identical to an uninterrupted run."""
    import chex
    import jax

    from run_configs import tiny_config
    from zoo.train.checkpoint import Checkpointer
    from zoo.train.loop import train_and_evaluate

    run = dict(num_train_steps=6, checkpoint_every_steps=3, eval_every_steps=100,
               per_device_batch_size=2, data_workers=1)
    whole = train_and_evaluate(tiny_config(**run), str(tmp_path / "whole"))
    train_and_evaluate(tiny_config(**run), str(tmp_path / "resumed"), stop_after_step=3)
    ckpt = Checkpointer(str(tmp_path / "resumed"), read_only=True)
    assert has_data(ckpt.manager, 3)
    ckpt.close()
    resumed = train_and_evaluate(tiny_config(**run), str(tmp_path / "resumed"))
    chex.assert_trees_all_equal(jax.device_get(resumed["params"]),
                                jax.device_get(whole["params"]))
