"""Checked mode (`zoo.models.checked`): bad token ids and lengths raise InputError eagerly and
under jit, for every family; valid inputs give exactly the outputs of plain `model.apply`."""
import functools

import chex
import jax
import jax.numpy as jnp
import pytest
from jax.experimental import checkify

import zoo
from zoo.errors import InputError
from zoo.models import checked_apply, checked_jit
from zoo.models.checked import throw, validate_inputs

B, T = 2, 6
_GPT = dict(vocab_size=50, emb_dim=16, num_heads=2, num_layers=1, mlp_dim=32, max_len=8,
            dropout_rate=0.0)
_BERT = dict(vocab_size=40, mask_token_id=39, emb_dim=16, num_heads=2, num_layers=1, mlp_dim=32,
             max_len=8, dropout_rate=0.0)
_TRANSFORMER = dict(vocab_size=30, emb_dim=16, num_heads=2, num_encoder_layers=1,
                    num_decoder_layers=1, mlp_dim=32, max_len=8, dropout_rate=0.0)
_RNN = dict(vocab_size=20, emb_dim=8, hidden_size=8, num_layers=1, dropout_rate=0.0)

# name: (preset, overrides, id argument names, has lengths)
CASES = {
    "gpt": ("gpt_tiny", _GPT, ("tokens",), False),
    "bert": ("bert_tiny", _BERT, ("inputs",), True),
    "transformer": ("transformer_tiny", _TRANSFORMER, ("inputs", "decoder_inputs"), False),
    "rnn_lm": ("lstm_lm", _RNN, ("tokens",), False),
    "rnn_classifier": ("lstm_classifier", _RNN, ("tokens",), True),
    "seq2seq": ("seq2seq_lstm_bahdanau", dict(_RNN, max_len=8), ("inputs", "decoder_inputs"),
                False),
}


def _inputs(case: str, vocab: int) -> dict:
    ids = jax.random.randint(jax.random.key(1), (len(CASES[case][2]), B, T), 1, vocab)
    inputs = {name: ids[i] for i, name in enumerate(CASES[case][2])}
    if CASES[case][3]:
        inputs["lengths"] = jnp.array([T, 3], jnp.int32)
    return inputs


@functools.cache
def _setup(case: str):
    preset, overrides, _, _ = CASES[case]
    model = zoo.create_model(preset, **overrides)
    inputs = _inputs(case, model.config.vocab_size)
    variables = model.init(jax.random.key(0), **inputs)
    return model, variables, inputs, checked_jit(model)


def _call(mode: str, case: str, **changes):
    model, variables, inputs, jitted = _setup(case)
    inputs = {**inputs, **changes}
    if mode == "eager":
        return checked_apply(model, variables, **inputs)
    return jitted(variables, **inputs)


@pytest.mark.parametrize("case", CASES)
def test_valid_inputs_give_the_outputs_of_plain_apply(case):
    model, variables, inputs, jitted = _setup(case)
    chex.assert_trees_all_equal(checked_apply(model, variables, **inputs),
                                model.apply(variables, **inputs))
    chex.assert_trees_all_equal(jitted(variables, **inputs),
                                jax.jit(model.apply)(variables, **inputs))


def _bad_ids(kind: str, ids: jax.Array, vocab: int) -> tuple[jax.Array, str]:
    """A broken copy of `ids` and a fragment the error message must hold."""
    if kind == "minus_one":
        return ids.at[1, 2].set(-1), "found in [-1, "
    if kind == "vocab_size":
        return ids.at[0, 0].set(vocab), f", {vocab}]; allowed [0, vocab_size={vocab})"
    if kind == "float":
        return ids.astype(jnp.float32), "dtype float32"
    return ids[0], "rank 1"  # wrong rank


@pytest.mark.parametrize("mode", ["eager", "jit"])
@pytest.mark.parametrize("kind", ["minus_one", "vocab_size", "float", "rank"])
@pytest.mark.parametrize("case", CASES)
def test_bad_token_ids_raise(case, kind, mode):
    model, _, inputs, _ = _setup(case)
    for name in CASES[case][2]:
        bad, fragment = _bad_ids(kind, inputs[name], model.config.vocab_size)
        with pytest.raises(InputError, match=r"^" + name + ": ") as info:
            _call(mode, case, **{name: bad})
        assert fragment in str(info.value)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize("mode", ["eager", "jit"])
@pytest.mark.parametrize("lengths, fragment", [
    ([T, T + 1], f"values found in [{T}, {T + 1}]; allowed [0, T={T}]"),
    ([-1, 2], f"values found in [-1, 2]; allowed [0, T={T}]"),
    ([2.0, 3.0], "dtype float32"),
    ([[[2, 3]]], "rank 3"),
    ([1, 2, 3], "3 rows but tokens has 2"),
])
@pytest.mark.parametrize("case", [c for c in CASES if CASES[c][3]])
def test_bad_lengths_raise(case, lengths, fragment, mode):
    fragment = fragment.replace("tokens", CASES[case][2][0])
    with pytest.raises(InputError, match=r"^lengths: ") as info:
        _call(mode, case, lengths=jnp.asarray(lengths))
    assert fragment in str(info.value)


def test_lengths_at_the_bounds_are_valid():
    for case in (c for c in CASES if CASES[c][3]):
        for lengths in ([0, T], [T, 0]):
            _call("jit", case, lengths=jnp.array(lengths, jnp.int32))
            _call("eager", case, lengths=jnp.array(lengths, jnp.int32))


@pytest.mark.parametrize("mode", ["eager", "jit"])
@pytest.mark.parametrize("case", ["gpt", "bert", "transformer", "seq2seq"])
def test_sequences_longer_than_max_len_raise(case, mode):
    _, _, inputs, _ = _setup(case)
    name = CASES[case][2][0]
    long = jnp.ones((B, 9), jnp.int32)
    changes = {name: long}
    if "decoder_inputs" in inputs:
        changes["decoder_inputs"] = long
    if "lengths" in inputs:
        changes["lengths"] = jnp.array([9, 9], jnp.int32)
    with pytest.raises(InputError, match=rf"^{name}: length 9 exceeds the model's max_len=8"):
        _call(mode, case, **changes)


def test_recurrent_models_take_any_length():
    model, variables, inputs, jitted = _setup("rnn_lm")
    tokens = jnp.ones((B, 40), jnp.int32)
    chex.assert_trees_all_equal(jitted(variables, tokens), jax.jit(model.apply)(variables, tokens))


@pytest.mark.parametrize("mode", ["eager", "jit"])
def test_bert_segments_and_positions_are_checked(mode):
    model, variables, inputs, _ = _setup("bert")
    segments = jnp.zeros((B, T), jnp.int32).at[0, 1].set(2)
    with pytest.raises(InputError, match=r"^segments: values found in \[0, 2\]; allowed "
                                         r"\[0, type_vocab_size=2\)"):
        _call(mode, "bert", segments=segments)
    positions = jnp.array([[0, 5], [1, T]], jnp.int32)
    with pytest.raises(InputError, match=rf"^positions: values found in \[0, {T}\]; allowed "
                                         rf"\[0, T={T}\)"):
        _call(mode, "bert", positions=positions)
    good = dict(segments=segments.at[0, 1].set(1), positions=positions.at[1, 1].set(T - 1))
    plain = model.apply if mode == "eager" else jax.jit(model.apply)
    chex.assert_trees_all_equal(_call(mode, "bert", **good), plain(variables, **inputs, **good))


def test_methods_other_than_call_are_checked():
    model, variables, inputs, _ = _setup("transformer")
    encode = checked_jit(model, method="encode")
    chex.assert_trees_all_equal(encode(variables, inputs["inputs"]),
                                jax.jit(functools.partial(model.apply, method="encode"))(
                                    variables, inputs["inputs"]))
    with pytest.raises(InputError, match=r"^inputs: ids found in \[-1, "):
        encode(variables, inputs["inputs"].at[0, 0].set(-1))

    model, variables, inputs, _ = _setup("seq2seq")
    encoded = model.apply(variables, inputs["inputs"], method="encode")
    step = checked_jit(model, method="decode_step")
    token = inputs["decoder_inputs"][:, 0]
    chex.assert_trees_all_equal(step(variables, encoded, token),
                                jax.jit(functools.partial(model.apply, method="decode_step"))(
                                    variables, encoded, token))
    with pytest.raises(InputError, match=r"^token: ids found in \[\d+, 20\]"):
        step(variables, encoded, token.at[1].set(20))
    with pytest.raises(InputError, match=r"^token: shape \(2, 1\) has rank 2; expected rank 1"):
        checked_apply(model, variables, encoded, token[:, None], method="decode_step")


def test_user_jit_with_checkify_and_throw():
    model, variables, inputs, _ = _setup("gpt")

    @jax.jit
    @checkify.checkify
    def mean_logit(variables, tokens):
        return checked_apply(model, variables, tokens).mean()

    err, value = mean_logit(variables, inputs["tokens"])
    throw(err)  # nothing failed
    assert value == jax.jit(lambda v, t: model.apply(v, t).mean())(variables, inputs["tokens"])
    err, _ = mean_logit(variables, inputs["tokens"].at[0, 0].set(50))
    with pytest.raises(InputError, match=r"^tokens: ids found in \[\d+, 50\]; allowed "
                                         r"\[0, vocab_size=50\)\. Check the tokenizer"):
        throw(err)


def test_training_keywords_pass_through():
    model = zoo.create_model("gpt_tiny", **{**_GPT, "dropout_rate": 0.5})
    tokens = jnp.ones((B, T), jnp.int32)
    variables = model.init(jax.random.key(0), tokens)
    rngs = {"dropout": jax.random.key(3)}
    chex.assert_trees_all_equal(checked_jit(model, train=True)(variables, tokens, rngs=rngs),
                                jax.jit(functools.partial(model.apply, train=True))(
                                    variables, tokens, rngs=rngs))
    chex.assert_trees_all_equal(checked_apply(model, variables, tokens, train=True, rngs=rngs),
                                model.apply(variables, tokens, train=True, rngs=rngs))


def test_recurrent_masks_and_bad_arguments():
    model, variables, inputs, _ = _setup("rnn_classifier")  # "last" pooling reads a mask
    mask = jnp.arange(T)[None, :] < inputs["lengths"][:, None]
    chex.assert_trees_all_equal(checked_apply(model, variables, inputs["tokens"], mask),
                                model.apply(variables, inputs["tokens"], mask))
    with pytest.raises(InputError, match=r"^lengths: a mask must be boolean with shape \(2, 6\)"):
        checked_apply(model, variables, inputs["tokens"], mask[:, :3])
    bert, bert_variables, bert_inputs, _ = _setup("bert")  # BERT's lengths are (B,) only
    with pytest.raises(InputError, match=r"^lengths: shape \(2, 6\) has rank 2"):
        checked_apply(bert, bert_variables, bert_inputs["inputs"], mask)
    with pytest.raises(InputError, match=r"^arguments do not match"):
        validate_inputs(model, inputs["tokens"], unknown=1)
    with pytest.raises(TypeError, match="needs a zoo model"):
        validate_inputs(object(), inputs["tokens"])
