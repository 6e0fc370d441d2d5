"""Verified restores: damaged checkpoints are reported, moved aside and skipped; a resume falls
back to the newest intact step and ends where an undamaged run ends; failed writes keep the
earlier checkpoints."""
import errno
import glob
import json
import os

import chex
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from zoo.errors import CheckpointError, WorkdirError
from zoo.train.checkpoint import DAMAGED_DIR, Checkpointer, DamagedCheckpoint
from zoo.train.loop import train_and_evaluate
from zoo.train.workdir import load_trained

from run_configs import tiny_config

# orbax leaves an unawaited read coroutine behind when a damaged array fails to read.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _config(steps):
    return tiny_config(num_train_steps=steps, checkpoint_every_steps=1, keep_checkpoints=3,
                       parallel="jit", per_device_batch_size=1)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """A 6-step run, undamaged, and a 4-step run (checkpoints 2, 3, 4) to damage copies of."""
    root = tmp_path_factory.mktemp("reference")
    full = train_and_evaluate(_config(6), str(root / "full"))
    train_and_evaluate(_config(4), str(root / "four"))
    return full["params"], str(root / "four")


def _copy(source, tmp_path):
    import shutil
    target = str(tmp_path / "work")
    shutil.copytree(source, target)
    return target


def _array_files(workdir, step):
    files = glob.glob(os.path.join(workdir, "checkpoints", str(step), "state", "**", "d", "*"),
                      recursive=True)
    return sorted(files, key=os.path.getsize, reverse=True)


def _flip(path, nbytes=4096):
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        start = len(data) // 4
        for i in range(start, min(len(data), start + nbytes)):
            data[i] ^= 0xFF
        f.seek(0)
        f.write(data)


def _truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _corrupt_meta(workdir, step):
    with open(os.path.join(workdir, "checkpoints", str(step), "meta", "metadata"), "w") as f:
        f.write('{"model": "gpt_tin')


def _delete_meta(workdir, step):
    os.remove(os.path.join(workdir, "checkpoints", str(step), "meta", "metadata"))


def _delete_state(workdir, step):
    import shutil
    shutil.rmtree(os.path.join(workdir, "checkpoints", str(step), "state"))


DAMAGE = {
    "flipped bytes": lambda w: _flip(_array_files(w, 4)[0]),
    "truncated file": lambda w: _truncate(_array_files(w, 4)[0]),
    "corrupt metadata": lambda w: _corrupt_meta(w, 4),
    "deleted metadata": lambda w: _delete_meta(w, 4),
    "deleted state": lambda w: _delete_state(w, 4),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_resume_falls_back_past_a_damaged_latest_checkpoint(damage, reference, tmp_path, capfd):
    full_params, four = reference
    workdir = _copy(four, tmp_path)
    DAMAGE[damage](workdir)
    resumed = train_and_evaluate(_config(6), workdir)
    err = capfd.readouterr().err
    assert "checkpoint 4 in" in err and "is damaged" in err and "moved it to" in err
    assert os.path.isdir(os.path.join(workdir, DAMAGED_DIR, "4"))
    assert resumed["step"] == 6
    chex.assert_trees_all_equal(resumed["params"], full_params)  # resumed exactly from step 3


def test_fingerprints_catch_arrays_that_differ_from_what_was_written(tmp_path):
    tree = {"params": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, "step": np.int32(1)}
    ckpt = Checkpointer(str(tmp_path))
    ckpt.save(1, tree, {"data_position": 1})
    path = os.path.join(ckpt.directory, "1", "meta", "metadata")
    with open(path) as f:
        meta = json.load(f)
    meta["fingerprints"]["['params']['w']"][0] += 1
    with open(path, "w") as f:
        json.dump(meta, f)
    with pytest.raises(DamagedCheckpoint, match=r"1 array\(s\) differ.*\['params'\]\['w'\]"):
        ckpt.restore(1, jax.eval_shape(lambda: tree))


def test_non_finite_arrays_are_damage(tmp_path):
    tree = {"params": {"w": np.array([1.0, np.nan], np.float32)}, "step": np.int32(1)}
    ckpt = Checkpointer(str(tmp_path))
    ckpt.manager.save(1, args=ocp.args.Composite(state=ocp.args.StandardSave(tree),
                                                 meta=ocp.args.JsonSave({})))
    ckpt.manager.wait_until_finished()
    with pytest.raises(DamagedCheckpoint, match=r"NaN or inf.*\['params'\]\['w'\]"):
        ckpt.restore(1, jax.eval_shape(lambda: tree))


def test_every_checkpoint_damaged_is_an_error_naming_them(reference, tmp_path):
    workdir = _copy(reference[1], tmp_path)
    for step in (2, 3, 4):
        _corrupt_meta(workdir, step)
    with pytest.raises(CheckpointError, match=r"every checkpoint .* is damaged \(steps 4, 3, 2"):
        train_and_evaluate(_config(6), workdir)
    assert sorted(os.listdir(os.path.join(workdir, DAMAGED_DIR))) == ["2", "3", "4"]


def test_load_trained_falls_back_without_touching_the_workdir(reference, tmp_path, capfd):
    workdir = _copy(reference[1], tmp_path)
    _flip(_array_files(workdir, 4)[0])
    listing = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
    _, _, _, meta = load_trained(workdir)
    assert meta["step"] == 3 and "skipped it" in capfd.readouterr().err
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == listing
    assert not os.path.exists(os.path.join(workdir, DAMAGED_DIR))
    with pytest.raises(CheckpointError, match=r"checkpoint 4 .* is damaged.*another --step"):
        load_trained(workdir, step=4)
    with pytest.raises(CheckpointError, match=r"no checkpoint 9 .* holds steps 2, 3, 4"):
        load_trained(workdir, step=9)


def test_load_trained_on_a_missing_workdir_creates_nothing(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(CheckpointError, match=r"no checkpoint in .*nowhere.*experiments.train"):
        load_trained(str(missing))
    assert not missing.exists()


def test_a_failed_write_names_the_directory_and_keeps_earlier_checkpoints(reference, tmp_path,
                                                                          monkeypatch):
    workdir = _copy(reference[1], tmp_path)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ocp.CheckpointManager, "save", disk_full)
    with pytest.raises(WorkdirError, match=r"could not write checkpoint 5 to .*checkpoints: No "
                                           r"space left on device.*\(4, 3, 2\) are intact"):
        train_and_evaluate(_config(6), workdir)
    monkeypatch.undo()
    assert Checkpointer(workdir).all_steps() == [4, 3, 2]
    assert load_trained(workdir)[3]["step"] == 4
