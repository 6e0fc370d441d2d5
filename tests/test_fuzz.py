"""Fuzzed entry points: whatever a user passes, the zoo answers with a result or its own error.

* model overrides (`create_model`): a model, or a ConfigError naming an overridden field; an
  out-of-range field is never accepted (string choices: `config.validate()` refuses them);
* model inputs (`checked_apply` / `checked_jit`): valid inputs give finite outputs equal to
  plain `model.apply`, invalid ones an InputError, never an XLA error or a silent result;
* run configs (`base_config` + `validate`): fine, or a ConfigError naming an overridden key;
* dataset names (`create_data`): data, or a ConfigError naming the dataset, without network;
* damaged checkpoints (`load_trained`, resume): the params of an intact step, untouched
  workdir, or a CheckpointError (a ZooError on resume).

Every property runs derandomized, so CI sees the same examples each time.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
import shutil
import socket
import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

import zoo
from strategies import (DATASETS, _DELETE, damage, finite, model_inputs, model_overrides,
                        run_overrides)
from zoo.errors import CheckpointError, ConfigError, InputError, ZooError
from zoo.models import checked_apply, checked_jit, get_spec, saved_config_fields
from zoo.train.config import base_config, validate

FUZZ = dict(deadline=None, derandomize=True, database=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _names_one_of(message: str, keys) -> bool:
    return any(re.search(rf"(?<![\w]){re.escape(k)}(?![\w])", message) for k in keys)


# ------------------------------------------------------------------------------------------
# 1. Model config overrides.

@settings(max_examples=1000, **FUZZ)
@given(case=model_overrides())
# Found by this test once: a divisor search as long as emb_dim, an infinite epsilon and
# switches that took any value; an unknown field was a plain ValueError.
@example(case=("gpt_tiny", {"emb_dim": (2**62, True), "num_heads": (3, True)}))
@example(case=("bert_tiny", {"ln_epsilon": (float("inf"), False)}))
@example(case=("transformer_tiny", {"pre_ln": ("no", False)}))
@example(case=("gpt_tiny", {"hidden_size": (64, False)}))
def test_model_overrides_give_a_model_or_a_config_error_naming_the_field(case):
    name, tagged = case
    overrides = {k: v for k, (v, _) in tagged.items()}
    invalid = sorted(k for k, (_, ok) in tagged.items() if ok is False)
    start = time.monotonic()
    try:
        model = zoo.create_model(name, **overrides)
    except ConfigError as e:
        event("refused on creation")
        assert _names_one_of(str(e), overrides), (str(e), overrides)
        assert "\n" not in str(e)
        return
    finally:
        assert time.monotonic() - start < 2.0, f"checking {overrides} took too long"
    config = model.config
    try:
        config.validate()
    except ConfigError as e:
        event("refused by validate()")
        assert _names_one_of(str(e), overrides), (str(e), overrides)
        return
    event("accepted")
    assert not invalid, f"{name} accepted the out-of-range field(s) {invalid}: {overrides}"
    # The config re-validates: rebuilt from its fields it is the same config.
    assert type(config)(**dataclasses.asdict(config)) == config


# ------------------------------------------------------------------------------------------
# 2. Model inputs through checked mode.

_RNN = dict(vocab_size=20, emb_dim=8, hidden_size=8, num_layers=1, dropout_rate=0.0)
_ATTN = dict(emb_dim=16, num_heads=2, mlp_dim=32, max_len=8, dropout_rate=0.0)
CHECKED = {
    "gpt": dict(preset="gpt_tiny", overrides=dict(_ATTN, vocab_size=50, num_layers=1),
                ids=("tokens",), lengths=False),
    "bert_classifier": dict(preset="bert_tiny_classifier", ids=("inputs",), lengths=True,
                            overrides=dict(_ATTN, vocab_size=40, mask_token_id=39,
                                           num_layers=1)),
    "transformer": dict(preset="transformer_tiny", ids=("inputs", "decoder_inputs"),
                        lengths=False, overrides=dict(_ATTN, vocab_size=30, num_encoder_layers=1,
                                                      num_decoder_layers=1)),
    "max_pool_classifier": dict(preset="lstm_classifier", overrides=dict(_RNN, pooling="max"),
                                ids=("tokens",), lengths=True),
    "tagger": dict(preset="bilstm_tagger", overrides=_RNN, ids=("tokens",), lengths=True),
}
for _case in CHECKED.values():
    _case["max_len"] = _case["overrides"].get("max_len")
B = 2


@functools.cache
def _checked_model(case: str):
    """(model, variables, checked_jit function, jitted plain apply), made once per case."""
    spec = CHECKED[case]
    model = zoo.create_model(spec["preset"], **spec["overrides"])
    inputs = {name: jnp.ones((B, 3), jnp.int32) for name in spec["ids"]}
    variables = model.init(jax.random.key(0), **inputs)
    return model, variables, checked_jit(model), jax.jit(model.apply)


def _ids(draw: dict, vocab: int, faulty: bool, rng: np.random.RandomState) -> np.ndarray:
    shape = {0: (), 1: (B,), 2: (B, draw["length"]), 3: (B, draw["length"], 2)}[draw["rank"]]
    ids = rng.randint(0, vocab, size=shape).astype(np.int64)
    if faulty and ids.size and draw["fault"] != "none":
        bad = {"negative": -1 - rng.randint(0, 5), "vocab": vocab + rng.randint(0, 5),
               "huge": 2**32 + 1 if draw["dtype"] == "int64" else 2**31 - 1}[draw["fault"]]
        if draw["dtype"] == "uint8":
            bad = 255  # neither -1 nor 2^31 - 1 is a uint8; 255 >= every vocab here
        ids.flat[rng.randint(0, ids.size)] = bad
    return ids.astype(draw["dtype"]) if draw["dtype"] != "int64" else ids


def _lengths(kind: str, length: int, rng: np.random.RandomState):
    if kind == "absent":
        return None
    valid = rng.randint(0, length + 1, size=B)
    return {
        "valid": valid.astype(np.int32), "zero": np.zeros(B, np.int32),
        "full": np.full(B, length, np.int32), "negative": valid - 1 - valid.max(),
        "over": valid + length + 1 - valid.min(), "rows": rng.randint(0, length + 1, size=B + 1),
        "float": valid.astype(np.float32), "rank0": np.int32(length),
        "rank2": np.zeros((B, length), np.int32),
        "mask": np.arange(length)[None, :] < valid[:, None],
        "mask_shape": np.ones((B, length + 1), bool),
        "huge64": valid.astype(np.int64) + 2**32,  # wraps to a valid int32 under jit
    }[kind]


def _expect_valid(model, args: dict, case: str) -> bool:
    """Whether checked mode must accept `args` (independently of zoo.models.checked)."""
    cfg, spec = model.config, CHECKED[case]
    for name in spec["ids"]:
        x = np.asarray(args[name])
        if x.ndim != 2 or not np.issubdtype(x.dtype, np.integer):
            return False
        if spec["max_len"] is not None and x.shape[1] > spec["max_len"]:
            return False
        if x.size and (x.min() < 0 or x.max() >= cfg.vocab_size):
            return False
    lengths = args.get("lengths")
    if lengths is None:
        return True
    primary = np.asarray(args[spec["ids"][0]])
    lengths = np.asarray(lengths)
    if lengths.ndim == 2 and case == "tagger":  # the recurrent models with "last" pooling too
        return lengths.dtype == bool and lengths.shape == primary.shape
    return (lengths.ndim == 1 and np.issubdtype(lengths.dtype, np.integer)
            and lengths.shape[0] == primary.shape[0]
            and (not lengths.size or (lengths.min() >= 0 and lengths.max() <= primary.shape[1])))


def _draw(case, mode="jit", length=3, dtype="int32", fault="none", lengths="absent"):
    return dict(case=case, mode=mode, length=length, rank=2, dtype=dtype, fault=fault, faulty=0,
                lengths=lengths, container="numpy", seed=0)


@settings(max_examples=150, **FUZZ)
@given(draw=model_inputs(CHECKED))
# Found by this test once: empty sequences (attention, max pooling), rows without a valid
# position, and 64-bit ids or lengths that jit wraps into int32.
@example(draw=_draw("gpt", mode="eager", length=0))
@example(draw=_draw("transformer", length=0))
@example(draw=_draw("max_pool_classifier", length=0))
@example(draw=_draw("max_pool_classifier", mode="eager", lengths="zero"))
@example(draw=_draw("tagger", dtype="int64", fault="huge"))
@example(draw=_draw("bert_classifier", lengths="huge64"))
def test_checked_apply_gives_plain_outputs_or_an_input_error(draw):
    case, spec = draw["case"], CHECKED[draw["case"]]
    model, variables, jitted, plain_jit = _checked_model(case)
    rng = np.random.RandomState(draw["seed"])
    args = {name: _ids(draw, model.config.vocab_size, i == draw["faulty"] % len(spec["ids"]), rng)
            for i, name in enumerate(spec["ids"])}
    if spec["lengths"]:
        args["lengths"] = _lengths(draw["lengths"], draw["length"], rng)
    args = {k: v for k, v in args.items() if v is not None}
    if draw["container"] == "jax":  # a user's own conversion (64-bit values wrap there)
        args = {k: jnp.asarray(v) for k, v in args.items()}
    call = ((lambda: checked_apply(model, variables, **args)) if draw["mode"] == "eager"
            else (lambda: jitted(variables, **args)))
    valid = _expect_valid(model, args, case)
    event(f"{draw['mode']}, {'valid' if valid else 'invalid'}")
    if not valid:
        with pytest.raises(InputError) as info:
            call()
        assert "\n" not in str(info.value)
        return
    out = call()
    expected = (model.apply(variables, **args) if draw["mode"] == "eager"
                else plain_jit(variables, **args))
    chex.assert_trees_all_equal_shapes(out, expected)
    chex.assert_trees_all_close(out, expected, rtol=1e-6, atol=1e-6)
    for leaf in jax.tree.leaves(out):
        assert leaf.shape[0] == B and finite(leaf), (draw, leaf)
        if case != "bert_classifier" and case != "max_pool_classifier":
            assert leaf.shape[1] == draw["length"]


# ------------------------------------------------------------------------------------------
# 3. Run config overrides.

@settings(max_examples=800, **FUZZ)
@given(case=run_overrides())
# Found by this test once: ml_collections' TypeError / ValueError for a value of another type.
@example(case=("gpt_tiny", {"seq_len": "a"}))
@example(case=("bert_tiny", {"compute_dtype": {".": 0}}))
@example(case=("bert_tiny", {"max_len": True}))  # once made the default seq_len True
def test_run_config_overrides_are_fine_or_a_config_error_naming_the_key(case):
    model, overrides = case
    try:
        validate(base_config(model, **overrides))
    except ConfigError as e:
        event("refused")
        assert _names_one_of(str(e), overrides), (str(e), overrides)
        assert "\n" not in str(e)
    else:
        event("accepted")


@settings(max_examples=30, **FUZZ)
@given(name=st.one_of(st.sampled_from(zoo.list_models()), st.text(max_size=10)))
def test_model_names_are_a_model_or_a_config_error(name):
    try:
        config = base_config(name)
    except ConfigError as e:
        assert repr(name) in str(e)
        return
    validate(config)


# ------------------------------------------------------------------------------------------
# 4. Dataset names.

@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("fuzz_data"))


@pytest.fixture
def no_network(monkeypatch):
    """Records (and refuses) every attempt to open a connection or resolve a name."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[1:] if args else kwargs)
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


# KNOWN GAP in zoo/data (being reworked to fail fast with one-line ConfigErrors): the error for
# a malformed name ("", "a b", "../x") quotes TFDS's multi-line help on the name format
# (tfds_splits.check_dataset_name). Set True once that message is one line.
ONE_LINE_MALFORMED_NAME_ERRORS = True
# KNOWN GAP in zoo/data: a prepared dataset that lacks the task's features (a tagger given
# zoo_docstrings, a classifier given zoo_text) raises a raw KeyError (or TypeError) from
# labelled_batches._load instead of a ConfigError naming the dataset and the missing feature.
# Set True once it does.
STRICT_DATASET_FEATURES = True
DATA_MODELS = {"gpt_tiny": 16, "bert_tiny": 16, "lstm_classifier": 64, "bilstm_tagger": 32,
               "seq2seq_lstm": 96}


@settings(max_examples=100, **FUZZ)
@given(model=st.sampled_from(sorted(DATA_MODELS)), dataset=DATASETS)
def test_dataset_names_give_data_or_a_config_error_naming_them(model, dataset, data_dir,
                                                               no_network):
    from zoo.data.pipelines import create_data

    # Preparing these embedded datasets takes 10-50 s; their names still go to the other tasks.
    assume(not (model in ("bilstm_tagger", "seq2seq_lstm") and any(
        name in dataset for name in ("zoo_code_tags", "zoo_num2words", "zoo_synthetic"))))
    config = base_config(model, dataset=dataset, data_dir=data_dir, seq_len=DATA_MODELS[model])
    start = time.monotonic()
    try:
        data = create_data(get_spec(model).task, config, 4, process_index=0, process_count=1)
    except (KeyError, TypeError) as e:
        if STRICT_DATASET_FEATURES:
            raise
        event(f"KNOWN GAP: {type(e).__name__} for a dataset without the task's features")
    except ValueError as e:  # a ConfigError, or a ValueError that names the dataset
        message = str(e)
        event("refused" if isinstance(e, ConfigError) else "refused (ValueError)")
        if ONE_LINE_MALFORMED_NAME_ERRORS or "is not a TFDS dataset name" not in message:
            assert "\n" not in message, message
        named = (dataset, repr(dataset), _tfds_spelling(dataset))
        assert any(name in message for name in named), (message, dataset)
    else:
        event("opened")
        batch = data.train.get(0)
        assert all(np.shape(v)[0] == 4 for v in batch.values())
    assert time.monotonic() - start < 20, f"{dataset!r} took too long"
    assert not no_network, f"{dataset!r} tried the network: {no_network}"


def _tfds_spelling(dataset: str) -> str:
    """The name as TFDS reads it ("Zoo_Text" -> "zoo__text"): the messages quote that one."""
    import tensorflow_datasets as tfds

    try:
        return str(tfds.core.naming.parse_builder_name_kwargs(dataset)[0])
    except Exception:
        return dataset


# ------------------------------------------------------------------------------------------
# 5. Damaged checkpoints.

def _run_config(steps: int):
    from run_configs import tiny_config

    return tiny_config(num_train_steps=steps, checkpoint_every_steps=1, keep_checkpoints=3,
                       parallel="jit", per_device_batch_size=1)


def _lstm_config(steps: int):
    from experiments.config_check import load_config

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    config = load_config(os.path.join(root, "experiments", "configs", "lstm_char.py"), "runlocal")
    config.unlock()
    config.update(num_train_steps=steps, checkpoint_every_steps=1, keep_checkpoints=3,
                  eval_every_steps=steps, num_eval_batches=1, num_samples=0, parallel="jit",
                  per_device_batch_size=1)
    config.lock()
    return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two small workdirs (gpt_tiny 3 steps, lstm_lm 2 steps, a checkpoint each step) and the
    params of each of their steps."""
    from zoo.train.loop import train_and_evaluate
    from zoo.train.workdir import load_trained

    root = tmp_path_factory.mktemp("fuzz_workdirs")
    gpt, lstm = str(root / "gpt"), str(root / "lstm")
    train_and_evaluate(_run_config(3), gpt)
    train_and_evaluate(_lstm_config(2), lstm)
    reference = {}
    for workdir, steps in ((gpt, (1, 2, 3)), (lstm, (1, 2))):
        for step in steps:
            _, _, params, meta = load_trained(workdir, step=step)
            reference[meta["model"], step] = jax.device_get(params)
    return Trained(gpt, lstm, reference)


@dataclasses.dataclass
class Trained:
    gpt: str
    lstm: str
    params: dict  # {(model, step): params}

    def __repr__(self):  # hypothesis prints the fixture with a failing example
        return f"Trained({self.gpt!r}, {self.lstm!r})"


def _files(workdir: str, step: str | None) -> list[str]:
    """The files of one step's checkpoint (of the whole checkpoints dir for None)."""
    top = os.path.join(workdir, "checkpoints", *([step] if step else []))
    return sorted(os.path.join(d, f) for d, _, names in os.walk(top) for f in names)


def _listing(workdir: str) -> dict[str, str]:
    """Every path under the workdir -> a hash of its contents ("dir" for a directory)."""
    listing = {}
    for d, dirs, names in os.walk(workdir):
        for name in dirs:
            listing[os.path.relpath(os.path.join(d, name), workdir)] = "dir"
        for name in names:
            with open(os.path.join(d, name), "rb") as f:
                listing[os.path.relpath(os.path.join(d, name), workdir)] = hashlib.sha1(
                    f.read()).hexdigest()
    return listing


def _steps(workdir: str) -> list[str]:
    """The step directories, newest first."""
    directory = os.path.join(workdir, "checkpoints")
    return sorted((n for n in os.listdir(directory) if n.isdigit()), key=int,
                  reverse=True) if os.path.isdir(directory) else []


def _pick(items: list, fraction: float):
    return items[int(fraction * len(items))] if items else None


def _pick_step(workdir: str, fraction: float) -> str | None:
    """A step, the newest one (the one a restore reads first) half of the time."""
    return _pick(_steps(workdir), max(0.0, 2 * fraction - 1))


def _apply(damage: tuple, workdir: str, other: str) -> None:
    kind, checkpoints = damage[0], os.path.join(workdir, "checkpoints")
    if kind == "delete_checkpoints":
        shutil.rmtree(checkpoints, ignore_errors=True)
    elif kind == "empty_checkpoints":
        shutil.rmtree(checkpoints, ignore_errors=True)
        os.makedirs(checkpoints)
    elif kind == "other_model":
        shutil.rmtree(checkpoints, ignore_errors=True)
        shutil.copytree(os.path.join(other, "checkpoints"), checkpoints)
    elif kind == "other_model_step":  # one step of the other model's in place of one of ours
        step = _pick_step(workdir, damage[1])
        if step is not None and os.path.isdir(os.path.join(other, "checkpoints", step)):
            shutil.rmtree(os.path.join(checkpoints, step))
            shutil.copytree(os.path.join(other, "checkpoints", step),
                            os.path.join(checkpoints, step))
    elif kind in ("truncate", "flip", "delete_file"):
        path = _pick(_files(workdir, _pick_step(workdir, damage[1])), damage[2])
        if path is None:
            return
        if kind == "delete_file":
            os.remove(path)
            return
        with open(path, "r+b") as f:
            data = bytearray(f.read())
            at = int(damage[3] * len(data))
            if kind == "truncate":
                f.truncate(at)
                return
            for i in range(at, min(len(data), at + damage[4])):
                data[i] ^= damage[5]
            f.seek(0)
            f.write(data)
    else:  # the JSON record of a step
        step = _pick_step(workdir, damage[1])
        path = step and os.path.join(checkpoints, step, "meta", "metadata")
        if path is None or not os.path.isdir(os.path.dirname(path)):
            return
        if kind == "meta_text":
            mode = "wb" if isinstance(damage[2], bytes) else "w"
            with open(path, mode) as f:
                f.write(damage[2])
            return
        if kind == "meta_json":
            record = damage[2]
        else:
            try:
                with open(path) as f:
                    record = json.load(f)
            except (OSError, ValueError):
                return
            section, fraction, value = damage[2], damage[3], damage[4]
            target = record
            if section.endswith(".") and isinstance(record.get(section[:-1]), dict):
                target = record[section[:-1]]
                section = _pick(sorted(target), fraction)
            elif section.endswith("."):
                return
            if section is None:
                return
            if value == _DELETE:
                target.pop(section, None)
            else:
                target[section] = value
        with open(path, "w") as f:
            json.dump(record, f)


def _damaged_copy(trained, damages, tmp_path) -> str:
    workdir = str(tmp_path / f"work{time.monotonic_ns()}")
    shutil.copytree(trained.gpt, workdir)
    for one in damages:
        _apply(one, workdir, trained.lstm)
    return workdir


# Malformed records of the newest step (found by these tests: raw KeyError, TypeError and
# ValueError from the loaders, and load_trained(step=3) returning step 2 when 3's was unreadable).
RECORD_DAMAGE = [
    [("meta_json", 0.0, {})],
    [("meta_json", 0.0, {"model": "gpt_tiny", "config": {"model": "gpt_tiny"}})],
    [("meta_text", 0.0, "{")],
    [("meta_edit", 0.0, "fingerprints", 0.0, "abc")],
    [("meta_edit", 0.0, "data_position", 0.0, "x")],
    [("meta_edit", 0.0, "model_config", 0.0, 3)],
    [("meta_edit", 0.0, "config.", 0.3, None)],
]


# When orbax fails to read one array of a damaged checkpoint it abandons the reads of the others,
# whose coroutines then report "Exception ignored" at garbage collection; nothing escapes.
ORBAX_ABANDONED_READS = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.mark.slow
@ORBAX_ABANDONED_READS
@settings(max_examples=60, **FUZZ)
@given(damages=st.lists(damage(), min_size=1, max_size=3),
       step=st.sampled_from([None, None, None, 3, 2]))
@example(damages=RECORD_DAMAGE[0], step=None)
@example(damages=RECORD_DAMAGE[1], step=None)
@example(damages=RECORD_DAMAGE[2], step=3)
@example(damages=RECORD_DAMAGE[3], step=None)
@example(damages=RECORD_DAMAGE[6], step=3)
def test_load_trained_restores_an_intact_step_or_raises_a_checkpoint_error(
        damages, step, trained, tmp_path):
    from zoo.train.workdir import load_trained

    workdir = _damaged_copy(trained, damages, tmp_path)
    before = _listing(workdir)
    try:
        try:
            _, model, params, meta = load_trained(workdir, step)
        except CheckpointError as e:
            event(f"CheckpointError: {str(e)[:40]}")
            return
        finally:
            assert _listing(workdir) == before, "load_trained changed the workdir"
        event(f"restored {meta['model']} step {meta['step']}")
        assert step is None or meta["step"] == step
        reference = trained.params.get((meta["model"], meta["step"]))
        assert reference is not None, (meta["model"], meta["step"])
        # The model is the one the restored step's record describes.
        assert dataclasses.asdict(model.config) == saved_config_fields(meta["model"],
                                                                       meta["model_config"])
        assert all(finite(x) for x in jax.tree.leaves(params))
        chex.assert_trees_all_equal(jax.device_get(params), reference)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.slow
@ORBAX_ABANDONED_READS
@settings(max_examples=6, **FUZZ)
@given(damages=st.lists(damage(), min_size=1, max_size=2))
@example(damages=RECORD_DAMAGE[0])
@example(damages=RECORD_DAMAGE[4])
@example(damages=RECORD_DAMAGE[5])
def test_resuming_a_damaged_workdir_finishes_or_raises_a_zoo_error(damages, trained, tmp_path):
    from zoo.train.loop import train_and_evaluate

    workdir = _damaged_copy(trained, damages, tmp_path)
    try:
        summary = train_and_evaluate(_run_config(4), workdir)
    except ZooError as e:
        event(f"{type(e).__name__}: {str(e)[:30]}")
        return
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    event("finished")
    assert summary["step"] == 4 and np.isfinite(summary["eval"]["loss"])
    assert all(finite(x) for x in jax.tree.leaves(summary["params"]))
