"""The decoder-only transformer: shapes, causality, KV-cache decoding, scan, sizes, input errors."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo.decode.sampling import generate
from zoo.models.gpt import GPTDecoder, stack_layers, unstack_layers

SMALL = dict(vocab_size=61, emb_dim=32, num_heads=4, num_layers=3, mlp_dim=64, max_len=40,
             dropout_rate=0.0)


@pytest.fixture(scope="module")
def model_and_params():
    model = zoo.create_model("gpt_tiny", **SMALL)
    tokens = jax.random.randint(jax.random.key(1), (2, 12), 0, SMALL["vocab_size"])
    params = model.init(jax.random.key(0), tokens)["params"]
    return model, params


def test_shapes_and_dtypes(model_and_params):
    model, params = model_and_params
    tokens = jnp.zeros((3, 17), jnp.int32)
    logits = model.apply({"params": params}, tokens, train=False)
    chex.assert_shape(logits, (3, 17, SMALL["vocab_size"]))
    chex.assert_type(logits, jnp.float32)
    chex.assert_tree_all_finite(logits)


def test_output_projection_is_tied_to_embedding(model_and_params):
    _, params = model_and_params
    assert set(params) == {"wte", "wpe", "ln_f", "layers_0", "layers_1", "layers_2"}
    assert "kernel" not in str(jax.tree_util.tree_structure(params["ln_f"]))


def test_dropout_is_active_only_in_training():
    model = zoo.create_model("gpt_tiny", **{**SMALL, "dropout_rate": 0.5})
    tokens = jnp.ones((2, 8), jnp.int32)
    params = model.init(jax.random.key(0), tokens)["params"]
    train = [model.apply({"params": params}, tokens, train=True, rngs={"dropout": jax.random.key(i)})
             for i in (1, 2)]
    assert not np.allclose(train[0], train[1])
    chex.assert_trees_all_equal(model.apply({"params": params}, tokens),
                                model.apply({"params": params}, tokens))


def test_causality(model_and_params):
    """Changing token t+1 leaves the logits at positions <= t unchanged."""
    model, params = model_and_params
    tokens = jax.random.randint(jax.random.key(2), (2, 16), 0, SMALL["vocab_size"])
    t = 9
    changed = tokens.at[:, t + 1].set((tokens[:, t + 1] + 1) % SMALL["vocab_size"])
    a = model.apply({"params": params}, tokens)
    b = model.apply({"params": params}, changed)
    chex.assert_trees_all_close(a[:, : t + 1], b[:, : t + 1], atol=1e-6)
    assert not np.allclose(a[:, t + 1:], b[:, t + 1:])


@pytest.mark.parametrize("scan_layers", [False, True], ids=["unrolled", "scanned"])
def test_kv_cache_decoding_equals_full_forward(model_and_params, scan_layers):
    model, params = model_and_params
    if scan_layers:
        model = zoo.create_model("gpt_tiny", **SMALL, scan_layers=True)
        params = stack_layers(params)
    prompt = jax.random.randint(jax.random.key(3), (2, 7), 0, SMALL["vocab_size"])
    tokens, step_logits = generate(GPTDecoder(model), params, prompt, jax.random.key(4),
                                   max_new_tokens=10, temperature=0.0, return_logits=True)
    full = model.apply({"params": params}, jnp.concatenate([prompt, tokens], axis=1))
    # The logits that chose new token i are the full model's logits at position P - 1 + i.
    chex.assert_trees_all_close(step_logits, full[:, 6:16], atol=1e-5)
    np.testing.assert_array_equal(tokens, jnp.argmax(full[:, 6:16], -1))


def test_scanned_stack_equals_unscanned(model_and_params):
    model, params = model_and_params
    scanned = zoo.create_model("gpt_tiny", **SMALL, scan_layers=True)
    tokens = jax.random.randint(jax.random.key(5), (2, 20), 0, SMALL["vocab_size"])
    stacked = stack_layers(params)
    chex.assert_trees_all_equal_shapes(
        stacked, scanned.init(jax.random.key(0), tokens)["params"])
    chex.assert_trees_all_close(scanned.apply({"params": stacked}, tokens),
                                model.apply({"params": params}, tokens), atol=1e-5)
    chex.assert_trees_all_equal(unstack_layers(stacked), params)


def test_remat_gives_the_same_gradients(model_and_params):
    model, params = model_and_params
    remat = zoo.create_model("gpt_tiny", **SMALL, remat=True)
    tokens = jax.random.randint(jax.random.key(6), (2, 12), 0, SMALL["vocab_size"])
    loss = lambda m: jax.grad(lambda p: m.apply({"params": p}, tokens).sum())(params)  # noqa: E731
    chex.assert_trees_all_close(loss(remat), loss(model), atol=1e-5)


@pytest.mark.parametrize("name,expected", [("gpt2_small", 124_439_808),
                                           ("gpt2_medium", 354_823_168)])
def test_gpt2_parameter_counts(name, expected):
    model = zoo.create_model(name)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))
    assert sum(x.size for x in jax.tree.leaves(shapes)) == expected


def test_sampling_filters():
    from zoo.decode.sampling import filter_logits

    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    kept = lambda x: np.asarray(x[0] > jnp.finfo(jnp.float32).min)  # noqa: E731
    np.testing.assert_array_equal(kept(filter_logits(logits, top_k=2)), [1, 1, 0, 0])
    np.testing.assert_array_equal(kept(filter_logits(logits, top_p=0.7)), [1, 1, 0, 0])
    np.testing.assert_array_equal(kept(filter_logits(logits, top_p=0.85)), [1, 1, 1, 0])
    np.testing.assert_array_equal(kept(filter_logits(logits, top_p=0.01)), [1, 0, 0, 0])


def test_sampling_is_reproducible_and_respects_top_k(model_and_params):
    model, params = model_and_params
    prompt = jnp.ones((4, 3), jnp.int32)
    run = lambda seed: generate(GPTDecoder(model), params, prompt, jax.random.key(seed),  # noqa
                                max_new_tokens=6, temperature=1.0, top_k=1)
    chex.assert_trees_all_equal(run(0), run(1))  # top_k=1 is greedy whatever the key
    greedy = generate(GPTDecoder(model), params, prompt, jax.random.key(0), max_new_tokens=6,
                      temperature=0.0)
    chex.assert_trees_all_equal(run(0), greedy)
    sampled = generate(GPTDecoder(model), params, prompt, jax.random.key(0), max_new_tokens=6,
                       temperature=1.5)
    chex.assert_shape(sampled, (4, 6))
    assert int(sampled.max()) < SMALL["vocab_size"]


class TestBadInput:
    def test_unknown_model_lists_the_available_ones(self):
        with pytest.raises(ValueError, match=r"unknown model 'gpt_huge'.*gpt_tiny"):
            zoo.create_model("gpt_huge")

    def test_unknown_override_lists_the_fields(self):
        with pytest.raises(ValueError, match=r"unknown config field.*'hidden'.*emb_dim"):
            zoo.create_model("gpt_tiny", hidden=3)

    def test_token_id_out_of_range(self, model_and_params):
        model, params = model_and_params
        with pytest.raises(ValueError, match=r"token id 61 is outside \[0, vocab_size=61\)"):
            model.apply({"params": params}, jnp.full((1, 4), 61, jnp.int32))
        with pytest.raises(ValueError, match=r"token id -1"):
            model.apply({"params": params}, jnp.full((1, 4), -1, jnp.int32))

    def test_sequence_longer_than_max_len(self, model_and_params):
        model, params = model_and_params
        with pytest.raises(ValueError, match=r"sequence length 41 exceeds the model's max_len=40"):
            model.apply({"params": params}, jnp.zeros((1, 41), jnp.int32))

    def test_wrong_rank_and_dtype(self, model_and_params):
        model, params = model_and_params
        with pytest.raises(ValueError, match=r"shape \(batch, length\)"):
            model.apply({"params": params}, jnp.zeros((4,), jnp.int32))
        with pytest.raises(ValueError, match=r"integer ids"):
            model.apply({"params": params}, jnp.zeros((1, 4), jnp.float32))


def test_list_models():
    assert {"gpt_tiny", "gpt2_small", "gpt2_medium"} <= set(zoo.list_models())
    assert zoo.list_models("gpt2*") == ["gpt2_medium", "gpt2_small"]
