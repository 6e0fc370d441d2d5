"""Several processes and device counts: jax.distributed start-up, a global batch that does not
depend on how the devices are split into processes, checkpoints that restore on another device
count, and resumes that refuse a silently changed global batch.

The multi-process runs are two `python -m experiments.train` processes with 2 fake CPU devices
each, talking over 127.0.0.1 (gloo collectives), against this process's 4 devices.
"""
import os
import signal
import socket
import subprocess
import sys
import time

import chex
import jax
import ml_collections
import numpy as np
import pytest

from zoo.errors import CheckpointError, ConfigError
from zoo.train import distributed
from zoo.train import mesh as mesh_lib
from zoo.train.checkpoint import Checkpointer
from zoo.train.config import validate
from zoo.train.loop import train_and_evaluate
from zoo.train.workdir import abstract_train_state, load_trained, resume_position

from run_configs import TINY_MODEL, tiny_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = dict(num_train_steps=10, checkpoint_every_steps=2, eval_every_steps=100,
           per_device_batch_size=2)
CLUSTER_ENV = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
               "SLURM_LOCALID", "OMPI_MCA_orte_hnp_uri", "KUBERNETES_SERVICE_HOST",
               "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID",
               "JOB_COMPLETION_INDEX")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _flags(**run) -> list[str]:
    fields = {**TINY_MODEL, **RUN, "num_samples": 0, "num_eval_batches": 1, **run}
    return [f"--config.{k}={v}" for k, v in fields.items()]


def _env(devices: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLUSTER_ENV}
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _start(workdir, process_id: int | None, port: int | None, devices: int, **run):
    cmd = [sys.executable, "-m", "experiments.train", "--config",
           os.path.join(REPO, "experiments", "configs", "gpt_tiny.py") + ":runlocal",
           "--workdir", str(workdir), *_flags(**run)]
    if process_id is not None:
        cmd += [f"--config.coordinator_address=127.0.0.1:{port}", "--config.num_processes=2",
                f"--config.process_id={process_id}"]
    return subprocess.Popen(cmd, env=_env(devices), cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _two_processes(workdir, **run):
    port = _free_port()
    return [_start(workdir, i, port, 2, **run) for i in range(2)]


def _finish(procs, timeout=300) -> list[str]:
    outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
    return outputs


def _params(workdir):
    return load_trained(str(workdir))[2]


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory):
    """RUN in this process: pmap over its 4 devices, global batch 8."""
    summary = train_and_evaluate(tiny_config(**RUN), str(tmp_path_factory.mktemp("one")))
    assert summary["step"] == RUN["num_train_steps"]
    return jax.device_get(summary["params"])


@pytest.mark.slow
def test_two_processes_on_an_fsdp_mesh_train_like_one(tmp_path, one_process_run):
    """2 processes x 2 devices on a mesh (data 2 x fsdp 2: parameters sharded across the
    processes, batches assembled from each process's rows) reach the parameters of 1 process
    x 4 devices under pmap."""
    out = _finish(_two_processes(tmp_path, parallel="mesh", **{"mesh.data": 2, "mesh.fsdp": 2}))
    assert "mesh {'data': 2, 'fsdp': 2, 'tensor': 1} over 4 devices in 2 processes" in out[0]
    chex.assert_trees_all_close(_params(tmp_path), one_process_run, atol=2e-6, rtol=0)


@pytest.mark.slow
def test_two_processes_killed_after_a_checkpoint_resume_and_train_like_one(tmp_path,
                                                                           one_process_run):
    """2 processes x 2 devices (pmap, collectives across the processes), killed after a
    checkpoint and started again, end where 1 process x 4 devices does on the same global
    batch without interruption. (Resuming bit-identically within one process is
    test_training_loop's; across processes only the order of the gradient sums differs.)"""
    killed = tmp_path / "killed"
    procs = _two_processes(killed)
    deadline = time.time() + 300
    while not (killed / "checkpoints" / "2").exists() and time.time() < deadline:
        time.sleep(0.02)
    for p in procs:
        p.send_signal(signal.SIGKILL)
    first = [p.communicate(timeout=60)[0] for p in procs]
    last = Checkpointer(str(killed)).latest_step()
    assert last in range(2, RUN["num_train_steps"]), f"the kill came too late ({last})"
    assert "pmap over 4 devices in 2 processes; global batch 8 x" in first[0]
    out = _finish(_two_processes(killed))
    assert f"resuming from checkpoint at step {last}" in out[0]
    assert "final validation loss" in out[0] and "final validation loss" not in out[1]
    two = _params(killed)
    # Far below one update (learning_rate 1e-3): a wrong data position, rng or optimizer
    # state after the restart would show; the gloo sums' order does not.
    chex.assert_trees_all_close(two, one_process_run, atol=2e-6, rtol=0)


@pytest.mark.slow
def test_a_sigterm_to_one_process_stops_both_at_one_step_with_a_checkpoint(tmp_path,
                                                                         one_process_run):
    """A preemption notice reaching only process 1: both processes agree on the next log /
    checkpoint step, save there and exit 143 (neither waits forever in a collective the
    other left); the rerun ends where 1 process x 4 devices does."""
    stopped = tmp_path / "stopped"
    procs = _two_processes(stopped)
    deadline = time.time() + 300
    while not (stopped / "checkpoints" / "2").exists() and time.time() < deadline:
        time.sleep(0.02)
    procs[1].send_signal(signal.SIGTERM)
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [143, 143], outputs[0][-2000:] + outputs[1][-2000:]
    last = Checkpointer(str(stopped)).latest_step()
    assert last in range(2, RUN["num_train_steps"]), f"the signal came too late ({last})"
    assert f"SIGTERM received: saved a checkpoint at step {last}" in outputs[0]
    out = _finish(_two_processes(stopped))
    assert f"resuming from checkpoint at step {last}" in out[0]
    chex.assert_trees_all_close(_params(stopped), one_process_run, atol=2e-6, rtol=0)


@pytest.fixture(scope="module")
def eight_device_workdir(tmp_path_factory):
    """A run of 2 steps with jit over 8 devices (global batch 16), checkpointed."""
    workdir = tmp_path_factory.mktemp("eight")
    _finish([_start(workdir, None, None, 8, num_train_steps=2, parallel="jit")])
    return workdir


@pytest.mark.slow
def test_a_checkpoint_written_on_8_devices_restores_on_4_and_on_1(eight_device_workdir):
    ckpt = Checkpointer(str(eight_device_workdir), read_only=True)
    _, _, target = abstract_train_state(ml_collections.ConfigDict(ckpt.restore_meta(2)["config"]))
    on_one = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype), target)
    on_four = jax.tree.map(lambda s: jax.ShapeDtypeStruct(
        s.shape, s.dtype, sharding=distributed.replicated_sharding()), target)
    one, _ = ckpt.restore(2, on_one)  # verified against the fingerprints written on 8
    four, _ = ckpt.restore(2, on_four)
    ckpt.close()
    assert {len(x.sharding.device_set) for x in jax.tree.leaves(one)} == {1}
    assert {len(x.sharding.device_set) for x in jax.tree.leaves(four)} == {4}
    chex.assert_trees_all_equal(jax.device_get(one), jax.device_get(four))
    chex.assert_trees_all_equal(_params(eight_device_workdir), jax.device_get(one["params"]))


@pytest.mark.slow
def test_a_changed_global_batch_is_refused_unless_allowed(eight_device_workdir, tmp_path,
                                                          capsys):
    """Written with 8 devices x 2 = 16 per batch; resumed here with 4 devices x 2 = 8."""
    with pytest.raises(CheckpointError, match=r"global batch of 16 but this run's is 8 .*"
                                              r"--config\.allow_batch_change=True"):
        train_and_evaluate(tiny_config(**RUN), str(eight_device_workdir))
    summary = train_and_evaluate(tiny_config(**{**RUN, "num_train_steps": 3},
                                             allow_batch_change=True),
                                 str(eight_device_workdir))
    assert summary["step"] == 3  # pmap over this process's 4 devices, from the jit-on-8 state
    out = capsys.readouterr().out
    assert "global batch changed from 16 to 8: data position 2 -> 4 batches" in out


def test_resume_position_rescales_to_the_examples_seen():
    record = {"data_position": 5, "global_batch": 12}
    assert resume_position(record, 12, False, "d") == (5, None)
    assert resume_position({"data_position": 5}, 8, False, "d") == (5, None)  # older records
    assert resume_position(record, 8, True, "d")[0] == 8  # 60 examples -> ceil(60 / 8)
    assert resume_position(record, 30, True, "d")[0] == 2
    with pytest.raises(CheckpointError, match=r"global batch of 12 but this run's is 8"):
        resume_position(record, 8, False, "d")


@pytest.fixture
def no_cluster(monkeypatch):
    for key in CLUSTER_ENV:
        monkeypatch.delenv(key, raising=False)
    return monkeypatch


def test_auto_starts_jax_distributed_only_among_several_processes(no_cluster):
    assert not distributed.wanted(tiny_config())  # a plain machine
    assert distributed.wanted(tiny_config(num_processes=2, process_id=1,
                                          coordinator_address="10.0.0.1:1234"))
    assert not distributed.wanted(tiny_config(num_processes=1))
    slurm = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "node1", "SLURM_PROCID": "0",
             "SLURM_LOCALID": "0"}
    for key, value in slurm.items():
        no_cluster.setenv(key, value)
    no_cluster.setenv("SLURM_NTASKS", "1")
    assert not distributed.wanted(tiny_config())  # one SLURM task is a plain process
    no_cluster.setenv("SLURM_NTASKS", "4")
    assert distributed.wanted(tiny_config())
    assert not distributed.wanted(tiny_config(distributed="off"))


def test_settings_come_from_the_environment(no_cluster):
    no_cluster.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    no_cluster.setenv("JAX_NUM_PROCESSES", "4")
    no_cluster.setenv("JOB_COMPLETION_INDEX", "3")  # a Kubernetes indexed Job's pod index
    assert distributed.settings(tiny_config()) == ("10.0.0.1:1234", 4, 3)
    assert distributed.settings(tiny_config(process_id=1)) == ("10.0.0.1:1234", 4, 1)
    no_cluster.setenv("JAX_PROCESS_ID", "4")
    with pytest.raises(ConfigError, match=r"process_id must be in \[0, num_processes=4\)"):
        distributed.settings(tiny_config())


@pytest.mark.parametrize("fields, message", [
    (dict(process_id=2, num_processes=2), r"process_id=2 must be < num_processes=2"),
    (dict(num_processes=0), r"num_processes must be an integer >= 1"),
    (dict(coordinator_address="10.0.0.1"), r"coordinator_address must be host:port"),
    (dict(distributed="off", num_processes=2), r"distributed='off' but num_processes set"),
    (dict(distributed="yes"), r"config\.distributed must be one of"),
])
def test_inconsistent_process_settings_are_one_line_errors(fields, message):
    with pytest.raises(ConfigError, match=message) as error:
        validate(tiny_config(**fields))
    assert "\n" not in str(error.value)


def test_process_local_rows_become_one_global_batch():
    """One process: its rows are the whole batch, laid out over the 4 devices by row."""
    rows = {"x": np.arange(8 * 3).reshape(8, 3)}
    batch = mesh_lib.global_batch(rows, mesh_lib.create_mesh({"data": -1}))["x"]
    assert batch.shape == (8, 3) and len(batch.sharding.device_set) == 4
    assert [s.index[0] for s in batch.addressable_shards] == [slice(2 * i, 2 * i + 2)
                                                              for i in range(4)]
    np.testing.assert_array_equal(distributed.to_host(batch), rows["x"])
