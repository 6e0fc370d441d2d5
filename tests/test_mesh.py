"""The train step over a device mesh: data parallel == FSDP == tensor parallel == pmap == one
device; FSDP holds 1/N of the state per device; every parameter has logical axis names."""
import re

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import jax_utils
from jax.sharding import PartitionSpec

import zoo
from zoo.data.pipelines.sharding import shard_batch
from zoo.errors import ConfigError
from zoo.models import get_spec
from zoo.nn.logical_axes import NAMES, recording_axes
from zoo.tasks import get_task
from zoo.train import mesh as mesh_lib
from zoo.train import step as step_lib
from zoo.train.config import base_config, validate
from zoo.train.optimizer import create_optimizer
from zoo.train.partitioning import (DEFAULT_RULES, MESH_AXES, axis_rules, logical_param_specs,
                                    param_shardings)
from zoo.train.schedules import create_schedule
from zoo.train.state import create_train_state

OPT = ml_collections.ConfigDict(dict(grad_clip_norm=1.0, weight_decay=0.1, adam_b1=0.9,
                                     adam_b2=0.95, adam_eps=1e-8))
MODELS = {
    "gpt": ("gpt_tiny", dict(vocab_size=32, emb_dim=32, num_heads=4, num_layers=2, mlp_dim=64,
                             max_len=16, dropout_rate=0.0, scan_layers=True)),
    "lstm": ("lstm_lm", dict(vocab_size=32, emb_dim=16, hidden_size=32, num_layers=2,
                             dropout_rate=0.0)),
}
# (mesh axes, a parameter whose sharding must name that mesh axis)
MESHES = {
    "data": ({"data": 4}, None),
    "fsdp": ({"fsdp": 4}, "fsdp"),
    "tensor": ({"data": 2, "tensor": 2}, "tensor"),
}


def _setup(family):
    name, overrides = MODELS[family]
    model = zoo.create_model(name, **overrides)
    task = get_task(get_spec(name).task)
    schedule = create_schedule("cosine", learning_rate=1e-3, warmup_steps=1, total_steps=10)
    tx = create_optimizer(OPT, schedule)
    return model, task, schedule, tx, task.example_inputs(model.config, 16)


def _batches(num=2, batch_size=8, seq_len=16, vocab=32):
    rng = np.random.default_rng(0)
    out = []
    for _ in range(num):
        window = rng.integers(0, vocab, (batch_size, seq_len + 1)).astype(np.int32)
        weights = np.ones((batch_size, seq_len), np.float32)
        weights[0, -5:] = 0.0
        out.append({"inputs": window[:, :-1], "targets": window[:, 1:], "weights": weights})
    return out


def _copy(tree):
    return jax.tree.map(jnp.copy, tree)


def _specs(tree):
    return [leaf.sharding.spec for leaf in jax.tree.leaves(tree)]


@pytest.mark.parametrize("family", ["gpt", "lstm"])
def test_mesh_pmap_and_single_device_updates_agree(family):
    model, task, schedule, tx, example = _setup(family)
    batches, rng = _batches(), jax.random.key(1)
    start = create_train_state(model, tx, example, jax.random.key(0))

    single = _copy(start)
    jit_step = step_lib.jit_train_step(task, learning_rate_fn=schedule)
    for batch in batches:
        single, single_metrics = jit_step(single, batch, rng)
    expected = step_lib.jit_eval_step(task)(single, batches[0])

    replicated = jax_utils.replicate(start)
    pmap_step = step_lib.pmap_train_step(task, learning_rate_fn=schedule)
    for batch in batches:
        replicated, _ = pmap_step(replicated, shard_batch(batch, 4), rng)
    chex.assert_trees_all_close(jax_utils.unreplicate(replicated).params, single.params,
                                atol=1e-5, rtol=1e-4)

    meshes = ["data", "fsdp", "tensor"] if family == "gpt" else ["data", "fsdp"]
    for mesh_name in meshes:
        axes, sharded_axis = MESHES[mesh_name]
        mesh = mesh_lib.create_mesh(axes)
        shardings = mesh_lib.train_state_shardings(model, tx, example, mesh)
        state = mesh_lib.shard_state(_copy(start), shardings)
        step = mesh_lib.mesh_train_step(task, mesh, shardings, learning_rate_fn=schedule)
        for batch in batches:
            state, metrics = step(state, mesh_lib.global_batch(batch, mesh), rng)
        chex.assert_trees_all_close(state.params, single.params, atol=1e-5, rtol=1e-4,
                                    custom_message=f"mesh {axes}")
        chex.assert_trees_all_close(metrics, single_metrics, atol=1e-5, rtol=1e-4)
        # The state really is split the way the mesh says (params and Adam moments alike).
        if sharded_axis is not None:
            for tree in (state.params, state.opt_state):
                assert any(sharded_axis in jax.tree.leaves(tuple(spec)) for spec in _specs(tree))
    # The eval step on the last (most split) mesh sums what one device sums.
    sums = mesh_lib.mesh_eval_step(task, mesh, shardings)(
        state, mesh_lib.global_batch(batches[0], mesh))
    chex.assert_trees_all_close(sums, expected, atol=1e-3, rtol=1e-5)


def test_sharded_init_equals_single_device_init_and_is_sharded():
    model, _, _, tx, example = _setup("gpt")
    mesh = mesh_lib.create_mesh({"fsdp": 2, "tensor": 2})
    state, shardings = mesh_lib.create_sharded_train_state(model, tx, example,
                                                           jax.random.key(0), mesh)
    expected = create_train_state(model, tx, example, jax.random.key(0))
    chex.assert_trees_all_close(state.params, expected.params, atol=1e-6)
    kernel = state.params["layers"]["mlp"]["fc"]["kernel"]  # (L, D, F)
    assert kernel.sharding.spec == PartitionSpec(None, "fsdp", "tensor")
    assert kernel.addressable_shards[0].data.shape == (2, 16, 32)
    assert jax.tree.structure(state) == jax.tree.structure(shardings)
    chex.assert_trees_all_close(mesh_lib.host_copy(state.params), expected.params, atol=1e-6)
    abstract = mesh_lib.abstract_sharded_state(jax.eval_shape(lambda: expected), shardings)
    assert abstract.params["layers"]["mlp"]["fc"]["kernel"].sharding == kernel.sharding


def test_fsdp_holds_one_nth_of_params_and_optimizer_state_per_device():
    model = zoo.create_model("gpt2_medium", scan_layers=True)
    task = get_task("causal_lm")
    tx = create_optimizer(OPT, create_schedule("constant", learning_rate=1e-3, warmup_steps=0,
                                               total_steps=10))
    example = task.example_inputs(model.config, 8)
    abstract = jax.eval_shape(lambda: create_train_state(model, tx, example, jax.random.key(0)))

    def state_bytes(axes):
        shardings = mesh_lib.train_state_shardings(model, tx, example, mesh_lib.create_mesh(axes))
        return sum(mesh_lib.per_device_bytes(getattr(abstract, part), getattr(shardings, part))
                   for part in ("params", "opt_state"))

    data_parallel, fsdp = state_bytes({"data": 4}), state_bytes({"fsdp": 4})
    assert data_parallel > 3 * 354_823_168 * 4  # params + two Adam moments, float32, replicated
    assert fsdp / data_parallel == pytest.approx(1 / 4, rel=0.01)


def _registered_models():
    for name in zoo.list_models():
        scanned = "scan_layers" in zoo.create_model(name).config.__dataclass_fields__
        yield name, ({"scan_layers": True} if scanned else {})


def test_every_parameter_of_every_model_has_logical_axes():
    rules = axis_rules()
    ruled = {name for name, _ in rules}
    mesh = mesh_lib.create_mesh({"data": 1, "fsdp": 2, "tensor": 2})
    for name, overrides in _registered_models():
        model = zoo.create_model(name, **overrides)
        example = get_task(get_spec(name).task).example_inputs(model.config, 8)
        with recording_axes():
            boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), *example))["params"]
        leaves = jax.tree_util.tree_leaves_with_path(
            boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
        for path, leaf in leaves:
            where = f"{name}{jax.tree_util.keystr(path)}"
            assert isinstance(leaf, nn.LogicallyPartitioned), f"{where} has no logical axes"
            assert len(leaf.names) == leaf.value.ndim, f"{where}: {leaf.names} {leaf.value.shape}"
            assert set(leaf.names) - {None} <= ruled, f"{where}: {leaf.names} lack a rule"
        # Outside recording, init gives plain arrays: the params tree users and checkpoints see.
        plain = jax.eval_shape(lambda: model.init(jax.random.key(0), *example))["params"]
        assert jax.tree.structure(plain) == jax.tree.structure(nn.unbox(boxed))
        # ... and the specs become shardings on a real mesh.
        specs = logical_param_specs(model, example)
        param_shardings(specs, plain, mesh, rules)


def test_rules_name_mesh_axes_only():
    assert {name for name, _ in DEFAULT_RULES} >= set(NAMES) | {"batch"}
    for _, target in DEFAULT_RULES:
        targets = target if isinstance(target, tuple) else (target,)
        assert all(t is None or t in MESH_AXES for t in targets)
    assert axis_rules([("vocab", None)])[0] == ("vocab", None)  # overrides come first
    with pytest.raises(ConfigError, match="names mesh axes"):
        axis_rules([("vocab", "model")])


@pytest.mark.parametrize("axes, message", [
    ({"data": 3}, "does not fit 4 devices"),
    ({"data": 2, "fsdp": 3}, "does not fit 4 devices"),
    ({"model": 2}, "unknown"),
    ({"data": -1, "fsdp": -1}, "at most one -1"),
    ({"data": 0}, "integer sizes >= 1"),
])
def test_mesh_config_errors(axes, message):
    with pytest.raises(ConfigError, match=message):
        mesh_lib.create_mesh(axes)


def test_mesh_sizes_and_run_config():
    assert dict(mesh_lib.create_mesh({"data": -1, "tensor": 2}).shape) == {
        "data": 2, "fsdp": 1, "tensor": 2}
    validate(base_config("gpt_tiny", parallel="mesh", mesh={"data": -1, "fsdp": 2}))
    with pytest.raises(ConfigError, match="unknown"):
        validate(base_config("gpt_tiny", parallel="mesh", mesh={"pipeline": 2}))
    with pytest.raises(ConfigError, match="logical_axis_rules"):
        validate(base_config("gpt_tiny", logical_axis_rules=(("embed", "model"),)))


@pytest.mark.slow
def test_the_loop_on_a_mesh_checkpoints_what_pmap_resumes(tmp_path):
    """Training loop, parallel="mesh" (fsdp 2 x tensor 2): stopped after a checkpoint and
    resumed under pmap, it ends where an uninterrupted pmap run does (the checkpoint's sharded
    arrays restored onto replicated devices)."""
    from run_configs import tiny_config
    from zoo.train.loop import train_and_evaluate

    run = dict(num_train_steps=6, checkpoint_every_steps=3, eval_every_steps=3,
               log_every_steps=3, per_device_batch_size=2, dropout_rate=0.0)
    reference = train_and_evaluate(tiny_config(parallel="pmap", **run), str(tmp_path / "pmap"))
    mesh_run = tiny_config(parallel="mesh", mesh={"data": 1, "fsdp": 2, "tensor": 2}, **run)
    stopped = train_and_evaluate(mesh_run, str(tmp_path / "mesh"), stop_after_step=3)
    assert stopped["step"] == 3
    resumed = train_and_evaluate(tiny_config(parallel="pmap", **run), str(tmp_path / "mesh"))
    assert resumed["step"] == 6
    chex.assert_trees_all_close(jax.device_get(resumed["params"]),
                                jax.device_get(reference["params"]), atol=2e-6, rtol=0)


def _collectives(hlo: str) -> dict[str, list[str]]:
    """Compiled HLO text -> {computation name: ["all-gather f32[64,256]", ...]}, with the while
    loops' bodies named "body:<name>"."""
    bodies = set(re.findall(r"body=%?([\w.\-]+)", hlo))
    found, current = {}, None
    for line in hlo.splitlines():
        header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if header:
            name = header.group(1)
            current = f"body:{name}" if name in bodies else name
            continue
        op = re.search(r"= (\S+) (all-gather|all-reduce|reduce-scatter|all-to-all|"
                       r"collective-permute)(?:-start)?\(", line)
        if op:
            shape = re.sub(r"\{[^}]*\}", "", op.group(1))
            found.setdefault(current, []).append(f"{op.group(2)} {shape}")
    return found


def _compiled_fsdp_step(name, overrides, batch_size=8, seq_len=16):
    model = zoo.create_model(name, **overrides)
    task = get_task(get_spec(name).task)
    schedule = create_schedule("constant", learning_rate=1e-3, warmup_steps=0, total_steps=10)
    tx = create_optimizer(OPT, schedule)
    example = task.example_inputs(model.config, seq_len)
    mesh = mesh_lib.create_mesh({"fsdp": 4})
    shardings = mesh_lib.train_state_shardings(model, tx, example, mesh)
    abstract = mesh_lib.abstract_sharded_state(
        jax.eval_shape(lambda: create_train_state(model, tx, example, jax.random.key(0))),
        shardings)
    batch = mesh_lib.global_batch(_batches(1, batch_size, seq_len)[0], mesh)
    step = mesh_lib.mesh_train_step(task, mesh, shardings, learning_rate_fn=schedule)
    with jax.set_mesh(mesh), nn.logical_axis_rules(DEFAULT_RULES):
        return _collectives(step.jitted.lower(abstract, batch, jax.random.key(0))
                            .compile().as_text())


def test_fsdp_gathers_one_layer_at_a_time_inside_the_scanned_stack():
    """FSDP on a scanned GPT stack (L=4, D=64, F=256): the weights are all-gathered inside the
    layer loop, one layer's (D, F) slice per iteration (forward, and again backward), never
    the whole stacked (L, D, F) array; activations keep their rows split, so nothing gathers
    the batch."""
    found = _compiled_fsdp_step("gpt_tiny", dict(
        vocab_size=32, emb_dim=64, num_heads=4, num_layers=4, mlp_dim=256, max_len=16,
        dropout_rate=0.0, scan_layers=True))
    gathers = [op for ops in found.values() for op in ops if op.startswith("all-gather")]
    kernels = {"all-gather f32[64,192]", "all-gather f32[64,64]",  # qkv, attention out
               "all-gather f32[64,256]", "all-gather f32[256,64]"}  # mlp fc, proj
    loops = [set(ops) for name, ops in found.items() if name.startswith("body:")]
    assert len(loops) == 2 and all(kernels <= ops for ops in loops), found  # forward, backward
    assert not [op for op in gathers if op.startswith("all-gather f32[4,")], found  # (L, ...)
    assert not [op for op in gathers if "[8," in op and "s32" not in op], found  # batch rows


def test_fsdp_lstm_exchanges_nothing_inside_its_time_loops():
    """FSDP on an LSTM: the split weights are gathered once before the time loop and the
    gradients reduced after it; every time step runs on the device's own rows."""
    found = _compiled_fsdp_step("lstm_lm", dict(vocab_size=32, emb_dim=64, hidden_size=128,
                                                num_layers=2, dropout_rate=0.0))
    assert not {name: ops for name, ops in found.items() if name.startswith("body:")}, found
    ops = [op for ops in found.values() for op in ops]
    assert "all-gather f32[128,512]" in ops, found  # a hidden kernel, gathered once
    assert not [op for op in ops if re.search(r"\[16,8,", op)], found  # no (T, B, ...) gather
