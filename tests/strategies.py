"""Hypothesis strategies for tests/test_fuzz.py: model config overrides, run config overrides,
model inputs, dataset names and damage to a workdir's checkpoints.

Drawn values come tagged where the test needs an oracle: a model override is (value, valid),
valid being True / False for the field on its own, or None where it depends on other fields
(`pad_token_id` against `vocab_size`).
"""
from __future__ import annotations

import dataclasses
import string

import numpy as np
from hypothesis import strategies as st

from zoo.models import bert, get_spec, rnn_classifier, seq2seq
from zoo.models.config_checks import CHOICES, SIZES

# The presets the config fuzzing covers: every family, small and large presets alike (nothing
# is initialised, so sizes cost nothing).
PRESETS = ("gpt_tiny", "gpt2_small", "bert_tiny", "bert_tiny_classifier", "bert_base_tagger",
           "transformer_tiny", "lstm_lm", "rnn_lm", "lstm_classifier", "bilstm_tagger",
           "elmo_bilm", "seq2seq_lstm", "seq2seq_lstm_luong", "seq2seq_lstm_bahdanau")


def family_choices(config_cls: type) -> dict[str, tuple]:
    """{string field: allowed values} of a config class: CHOICES plus the family's own."""
    own = {bert.BertConfig: {"head": bert.HEADS, "pooling": bert.POOLINGS},
           rnn_classifier.RNNClassifierConfig: {"pooling": rnn_classifier.POOLINGS},
           seq2seq.Seq2SeqConfig: {"attention": seq2seq.ATTENTIONS}}.get(config_cls, {})
    return {**CHOICES, **own}


# Values no numeric or string field accepts.
JUNK = st.one_of(
    st.none(), st.just(float("nan")), st.just(float("inf")), st.just(-float("inf")),
    st.text(alphabet=string.ascii_letters + string.digits + " _-.", max_size=6),
    st.lists(st.integers(0, 3), max_size=2), st.just({"a": 1}),
)


def _tagged(strategy, valid):
    return strategy.map(lambda v: (v, valid))


def _size():
    valid = st.one_of(st.integers(1, 64), st.sampled_from([128, 10**6, 2**31 - 1, 10**12, 2**62]),
                      st.integers(1, 64).map(np.int64))
    invalid = st.one_of(st.integers(-2**63, 0), st.sampled_from([4.0, 0.5, 1e3, True, False]),
                        st.floats(allow_nan=True), JUNK)
    return st.one_of(_tagged(valid, True), _tagged(invalid, False))


def _rate():
    valid = st.floats(0, 1, exclude_max=True)
    invalid = st.one_of(st.floats(max_value=-1e-300), st.floats(min_value=1.0),
                        st.sampled_from([True, False]), JUNK)
    return st.one_of(_tagged(valid, True), _tagged(invalid, False))


def _epsilon():
    valid = st.floats(min_value=1e-30, max_value=1e30)
    invalid = st.one_of(st.floats(max_value=0.0), st.sampled_from([True, float("inf")]), JUNK)
    return st.one_of(_tagged(valid, True), _tagged(invalid, False))


def _token_id():  # valid or not depending on vocab_size (and on head, for mask_token_id)
    return st.one_of(_tagged(st.integers(0, 300), None),
                     _tagged(st.one_of(st.integers(max_value=-1), st.just(2.0), JUNK), False))


def _pad_multiple():
    valid = st.one_of(st.none(), st.integers(1, 512))
    invalid = st.one_of(st.integers(max_value=0), st.sampled_from([8.0, True]),
                        JUNK.filter(lambda v: v is not None))
    return st.one_of(_tagged(valid, True), _tagged(invalid, False))


def _boolean():
    invalid = st.one_of(st.sampled_from([0, 1, "yes", "no", "False", 1.0]), st.none(),
                        st.lists(st.booleans(), max_size=1))
    return st.one_of(_tagged(st.booleans(), True), _tagged(invalid, False))


def _choice(allowed: tuple):
    valid = st.sampled_from(allowed)
    strings = [a for a in allowed if isinstance(a, str)]
    mutated = st.sampled_from(strings).flatmap(lambda s: st.sampled_from(
        [s.upper(), f" {s}", s + "x", s[:-1], s.replace("_", "-")])) if strings else st.nothing()
    invalid = st.one_of(mutated, st.text(max_size=8), st.integers(-2, 3), JUNK).filter(
        lambda v: not _member(v, allowed))
    return st.one_of(_tagged(valid, True), _tagged(invalid, False))


def _member(value, allowed) -> bool:
    try:
        return value in allowed
    except TypeError:
        return False


def _field_value(config_cls: type, field: dataclasses.Field):
    choices = family_choices(config_cls)
    name = field.name
    if name in SIZES:
        return _size()
    if name.endswith("_rate"):
        return _rate()
    if name == "ln_epsilon":
        return _epsilon()
    if name == "pad_token_id":
        return _token_id()
    if name == "mask_token_id":  # read by the MLM head only: any value passes for the others
        return _token_id().map(lambda tagged: (tagged[0], None))
    if name == "vocab_pad_multiple":
        return _pad_multiple()
    if name in choices:
        return _choice(choices[name])
    if field.type in ("bool", bool):
        return _boolean()
    raise AssertionError(f"no strategy for {config_cls.__name__}.{name} ({field.type})")


UNKNOWN_FIELDS = st.sampled_from(["hidden", "num_head", "dropout", "emb", "heads", "layers",
                                  "dtype_", "vocab", "lr", "max_length"])


@st.composite
def model_overrides(draw):
    """(preset name, {field: (value, valid)}): up to five fields of the preset, sometimes one
    that no config of the family has."""
    name = draw(st.sampled_from(PRESETS))
    config_cls = get_spec(name).config_cls
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    chosen = draw(st.lists(st.sampled_from(sorted(fields)), unique=True, max_size=5))
    overrides = {k: draw(_field_value(config_cls, fields[k]), label=k) for k in chosen}
    if draw(st.integers(0, 9)) == 0:
        unknown = draw(UNKNOWN_FIELDS.filter(lambda k: k not in fields))
        overrides[unknown] = (draw(st.integers(1, 8)), False)
    return name, overrides


# ------------------------------------------------------------------------------------------
# Run config overrides.

RUN_MODELS = ("gpt_tiny", "bert_tiny", "transformer_tiny", "lstm_lm", "lstm_classifier",
              "seq2seq_lstm", "elmo_bilm")


def _like(default):
    """Values of the default's own type near it (mostly accepted by ml_collections)."""
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.one_of(st.integers(-3, 3), st.integers(0, 2 * default + 4),
                         st.sampled_from([2**31, 10**12]))
    if isinstance(default, float):
        return st.one_of(st.floats(-2, 2), st.sampled_from([0.0, 1.0, 1e-9, 1e9, float("nan"),
                                                           float("inf"), -float("inf")]))
    if isinstance(default, str):
        return st.one_of(st.just(default), st.text(max_size=6), st.sampled_from(
            [default.upper(), default + " ", "", "none", "auto", "jit", "cosine", "stop"]))
    return st.one_of(st.none(), st.text(max_size=6), st.integers(0, 4))  # a None default


ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.integers(),
                      st.floats(), st.text(max_size=6), st.lists(st.integers(), max_size=2),
                      st.dictionaries(st.text(max_size=2), st.integers(), max_size=1))


@st.composite
def run_overrides(draw):
    """(model, {key: value}): known keys of the model's run config (values of their type or
    any other), sometimes unknown keys."""
    from zoo.train.config import run_sections

    model = draw(st.sampled_from(RUN_MODELS))
    defaults = {k: v for fields in run_sections(model).values() for k, v in fields.items()}
    defaults.pop("model")  # base_config's positional argument
    keys = draw(st.lists(st.sampled_from(sorted(defaults)), unique=True, max_size=4))
    overrides = {k: draw(st.one_of(_like(defaults[k]), ANY_VALUE), label=k) for k in keys}
    if draw(st.integers(0, 5)) == 0:
        overrides[draw(st.sampled_from(["learning_rte", "steps", "batch_size", "lr", "datset",
                                        "hiden_size"]))] = draw(ANY_VALUE)
    return model, overrides


# ------------------------------------------------------------------------------------------
# Model inputs.

ID_DTYPES = ("int32", "int64", "uint8", "float32", "bool")
ID_FAULTS = ("none", "none", "negative", "vocab", "huge")
LENGTHS = ("absent", "valid", "valid", "zero", "full", "negative", "over", "rows", "float",
           "rank0", "rank2", "mask", "mask_shape", "huge64")


@st.composite
def model_inputs(draw, cases: dict):
    """A dict describing one call: the case, eager / jit, the tokens' layout and faults."""
    case = draw(st.sampled_from(sorted(cases)))
    bounded = cases[case]["max_len"] is not None
    clean = draw(st.booleans())  # half the calls have well-formed ids and lengths (in range or not)
    return dict(
        case=case,
        mode=draw(st.sampled_from(["eager", "jit"])),
        length=draw(st.sampled_from([0, 3, 8, 9, 11] if bounded else [0, 3, 8, 11])),
        rank=2 if clean else draw(st.sampled_from([2, 2, 0, 1, 3])),
        dtype=draw(st.sampled_from(ID_DTYPES[:3] if clean else ID_DTYPES)),
        fault="none" if clean else draw(st.sampled_from(ID_FAULTS)),
        faulty=draw(st.integers(0, 1)),  # which id argument the fault goes in
        lengths=(draw(st.sampled_from(LENGTHS[:5] + ("mask",) if clean else LENGTHS))
                 if cases[case]["lengths"] else "absent"),
        container=draw(st.sampled_from(["numpy", "jax"])),
        seed=draw(st.integers(0, 2**16)),
    )


# ------------------------------------------------------------------------------------------
# Dataset names.

REAL_TFDS = ("tiny_shakespeare", "lm1b", "imdb_reviews", "ag_news_subset", "mnist", "glue/cola",
             "ted_hrlr_translate/pt_to_en", "wmt14_translate/de-en", "c4/en", "lm1b:1.1.0",
             "squad", "conll2003", "wikipedia/20230601.en")
EMBEDDED = ("zoo_text", "zoo_docstrings", "zoo_code_tags", "zoo_num2words/en_fr",
            "zoo_synthetic_seq2seq/copy", "zoo_num2words", "zoo_text:1.0.0")


def _mangle(name: str):
    return st.sampled_from([name.upper(), name.title(), f" {name}", f"{name} ", name + "s",
                            name[:-1], name.replace("_", "-"), name + "/x", name + ":9.9.9",
                            "ns:" + name, name + "/", name.replace("_", "")])


DATASETS = st.one_of(
    st.sampled_from(REAL_TFDS),
    st.sampled_from(EMBEDDED),
    st.sampled_from(REAL_TFDS + EMBEDDED).flatmap(_mangle),
    st.text(max_size=12),
    st.text(alphabet=string.ascii_lowercase + "_/:.0123456789", min_size=1, max_size=16),
)


# ------------------------------------------------------------------------------------------
# Damage to a workdir's checkpoints.

# Meta records: JSON that is not the record (a list, a number, a dict missing its keys, ...).
JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
              st.text(max_size=5)),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.text(max_size=5), inner, max_size=3)),
    max_leaves=6,
)
META_KEYS = ("model", "model_config", "config", "data_position", "fingerprints", "tokenizer",
             "nonfinite_steps")


@st.composite
def damage(draw):
    """One damage: a tuple naming it, with fractions in [0, 1) that pick the file, step and
    offset when it is applied (the files are known only then)."""
    frac = st.floats(0, 1, exclude_max=True)
    kind = draw(st.sampled_from(["delete_checkpoints", "empty_checkpoints", "other_model",
                                 "other_model_step", "truncate", "truncate", "flip", "flip",
                                 "delete_file", "delete_file", "meta_text", "meta_json",
                                 "meta_edit", "meta_edit"]))
    if kind in ("truncate", "delete_file"):  # (kind, step, file, offset)
        return (kind, draw(frac), draw(frac), draw(frac))
    if kind == "flip":  # (kind, step, file, offset, bytes, xor mask)
        return (kind, draw(frac), draw(frac), draw(frac), draw(st.integers(1, 64)),
                draw(st.integers(1, 255)))
    if kind == "other_model_step":
        return (kind, draw(frac))
    if kind == "meta_text":
        return (kind, draw(frac), draw(st.one_of(st.text(max_size=20), st.binary(max_size=20))))
    if kind == "meta_json":
        return (kind, draw(frac), draw(JSON))
    if kind == "meta_edit":  # one entry of the real record deleted or replaced
        section = draw(st.sampled_from(META_KEYS + ("config.", "model_config.",
                                                    "fingerprints.")))
        replace = draw(st.one_of(st.just(_DELETE), JSON))
        return (kind, draw(frac), section, draw(frac), replace)
    return (kind,)


_DELETE = "<delete>"


def finite(x) -> bool:
    x = np.asarray(x)
    return not np.issubdtype(x.dtype, np.inexact) or bool(np.all(np.isfinite(x)))

