"""Hugging Face GPT-2 / BERT checkpoints in the zoo's GPT / Bert: outputs match transformers'."""
import json
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from zoo.convert.hf import from_hf_state_dict, load_hf_checkpoint

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ATOL = 1e-4
B, T, V = 3, 12, 100
LENGTHS = np.array([T, 7, 1])


def randomise(model, seed: int):
    """Every parameter perturbed (LayerNorm scales off 1, biases off 0), so a swapped or
    misplaced weight changes the outputs. Tied weights stay tied (one tensor)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model.eval()


def gpt2_config(**kwargs):
    return transformers.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=V, n_positions=64,
                                   bos_token_id=0, eos_token_id=0, **kwargs)


def bert_config(**kwargs):
    return transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=64, vocab_size=V, **kwargs)


def tokens(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, V, (B, T)).astype(np.int32)


def bert_inputs():
    ids = tokens(1)
    valid = np.arange(T)[None] < LENGTHS[:, None]
    ids = np.where(valid, ids, 0).astype(np.int32)  # pad_token_id 0 at the padding
    segments = (np.arange(T)[None] >= 4).astype(np.int32) * np.ones((B, 1), np.int32)
    torch_kwargs = {"input_ids": torch.tensor(ids, dtype=torch.long),
                    "attention_mask": torch.tensor(valid, dtype=torch.long),
                    "token_type_ids": torch.tensor(segments, dtype=torch.long)}
    return ids, segments, torch_kwargs


def bert_apply(model, params, *args, **kwargs):
    return model.apply({"params": params}, *args, **kwargs)


def max_diff(ours, theirs) -> float:
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else theirs
    assert np.shape(ours) == theirs.shape
    diff = float(np.max(np.abs(np.asarray(ours) - theirs)))
    print(f"max abs diff {diff:.2e} (outputs up to {float(np.max(np.abs(theirs))):.2f})")
    return diff


def saved(tmp_path_factory, name: str, model_cls, config, seed: int):
    """A randomised transformers model and the directory save_pretrained() wrote it to."""
    torch.manual_seed(seed)
    model = randomise(model_cls(config), seed)
    path = tmp_path_factory.mktemp(name)
    model.save_pretrained(path)
    return path, model


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return saved(tmp_path_factory, "gpt2", transformers.GPT2LMHeadModel, gpt2_config(), 0)


@pytest.fixture(scope="module")
def bert_mlm_dir(tmp_path_factory):
    return saved(tmp_path_factory, "bert_mlm", transformers.BertForMaskedLM, bert_config(), 2)


def test_gpt2_lm_logits_match(gpt2_dir):
    path, hf = gpt2_dir
    name, model, params = load_hf_checkpoint(path)
    assert name == "gpt_tiny"
    assert (model.config.emb_dim, model.config.num_layers, model.config.num_heads,
            model.config.mlp_dim, model.config.max_len, model.config.vocab_size) == (
        32, 2, 4, 128, 64, V)
    x = tokens()
    with torch.no_grad():
        expected = hf(torch.tensor(x, dtype=torch.long)).logits
    logits = model.apply({"params": params}, jnp.asarray(x))
    assert max_diff(logits, expected) < ATOL


def test_gpt2_scan_layers_dtype_and_shards(gpt2_dir, tmp_path):
    path, hf = gpt2_dir
    _, model, params = load_hf_checkpoint(path, overrides={"scan_layers": True})
    assert params["layers"]["attn"]["qkv"]["kernel"].shape == (2, 32, 3, 4, 8)
    x = tokens()
    with torch.no_grad():
        expected = hf(torch.tensor(x, dtype=torch.long)).logits
    assert max_diff(model.apply({"params": params}, jnp.asarray(x)), expected) < ATOL

    _, _, half = load_hf_checkpoint(path, dtype="bfloat16")
    assert half["wte"]["embedding"].dtype == jnp.bfloat16

    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    _, _, sharded = load_hf_checkpoint(tmp_path)
    _, _, whole = load_hf_checkpoint(path)
    for a, b in zip(_leaves(sharded), _leaves(whole), strict=True):
        np.testing.assert_array_equal(a, b)


def _leaves(tree):
    if isinstance(tree, dict):
        return [x for k in sorted(tree) for x in _leaves(tree[k])]
    return [tree]


def test_bfloat16_safetensors(gpt2_dir, tmp_path):
    """safetensors.numpy cannot read bfloat16; the loader's own reader does."""
    path, hf = gpt2_dir
    state = {k: v.to(torch.bfloat16) for k, v in hf.state_dict().items() if k != "lm_head.weight"}
    from safetensors.torch import save_file

    save_file(state, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    _, _, params = load_hf_checkpoint(tmp_path)
    assert params["wpe"].dtype == np.float32
    np.testing.assert_array_equal(params["wpe"], state["transformer.wpe.weight"].float().numpy())
    np.testing.assert_array_equal(params["layers_1"]["mlp"]["proj"]["kernel"],
                                  state["transformer.h.1.mlp.c_proj.weight"].float().numpy())


def test_gpt2_model_from_pytorch_bin(tmp_path):
    """A bare GPT2Model (no "transformer." prefix) in the legacy pytorch_model.bin format."""
    torch.manual_seed(1)
    hf = randomise(transformers.GPT2Model(gpt2_config()), 1)
    hf.config.save_pretrained(tmp_path)
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    _, model, params = load_hf_checkpoint(tmp_path)
    x = tokens()
    with torch.no_grad():
        hidden = hf(torch.tensor(x, dtype=torch.long)).last_hidden_state
    expected = hidden @ hf.wte.weight.detach().T  # the tied LM head
    assert max_diff(model.apply({"params": params}, jnp.asarray(x)), expected) < ATOL


def test_pytorch_bin_without_torch_is_a_clear_error(tmp_path, monkeypatch):
    hf = transformers.GPT2Model(gpt2_config())
    hf.config.save_pretrained(tmp_path)
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(ImportError, match="pip install torch.*safetensors"):
        load_hf_checkpoint(tmp_path)


def test_bert_mlm_logits_and_hidden_match(bert_mlm_dir):
    path, hf = bert_mlm_dir
    name, model, params = load_hf_checkpoint(path)
    assert name == "bert_tiny" and model.config.head == "mlm"
    assert model.config.pooling == "cls" and model.config.ln_epsilon == 1e-12
    ids, segments, kwargs = bert_inputs()
    with torch.no_grad():
        out = hf(**kwargs, output_hidden_states=True)
    logits = bert_apply(model, params, jnp.asarray(ids), jnp.asarray(LENGTHS),
                        segments=jnp.asarray(segments))
    assert max_diff(logits, out.logits) < ATOL
    sequence, _ = bert_apply(model, params, jnp.asarray(ids), jnp.asarray(LENGTHS),
                             segments=jnp.asarray(segments), return_hidden=True)
    assert max_diff(sequence, out.hidden_states[-1]) < ATOL  # padded positions included


def test_bert_model_hidden_and_pooled_match(tmp_path):
    """A bare BertModel: params hold the encoder only; return_hidden=True runs on them."""
    torch.manual_seed(3)
    hf = randomise(transformers.BertModel(bert_config()), 3)
    hf.save_pretrained(tmp_path)
    name, model, params = load_hf_checkpoint(tmp_path)
    assert name == "bert_tiny" and set(params) == {"bert"}
    ids, segments, kwargs = bert_inputs()
    with torch.no_grad():
        out = hf(**kwargs)
    # Without lengths the padding is found from pad_token_id (0), as the mask above.
    sequence, pooled = bert_apply(model, params, jnp.asarray(ids),
                                  segments=jnp.asarray(segments), return_hidden=True)
    assert max_diff(sequence, out.last_hidden_state) < ATOL
    assert max_diff(pooled, out.pooler_output) < ATOL


@pytest.mark.parametrize("cls_name,head,name", [
    ("BertForSequenceClassification", "classification", "bert_tiny_classifier"),
    ("BertForTokenClassification", "tagging", "bert_tiny_tagger"),
])
def test_bert_classifier_logits_match(tmp_path, cls_name, head, name):
    torch.manual_seed(4)
    hf = randomise(getattr(transformers, cls_name)(bert_config(num_labels=3)), 4)
    hf.save_pretrained(tmp_path)
    got_name, model, params = load_hf_checkpoint(tmp_path)
    assert (got_name, model.config.head, model.config.num_classes) == (name, head, 3)
    ids, segments, kwargs = bert_inputs()
    with torch.no_grad():
        expected = hf(**kwargs).logits
    logits = bert_apply(model, params, jnp.asarray(ids), jnp.asarray(LENGTHS),
                        segments=jnp.asarray(segments))
    assert max_diff(logits, expected) < ATOL


def test_from_state_dict_in_memory(bert_mlm_dir):
    _, hf = bert_mlm_dir
    name, model, params = from_hf_state_dict(hf.config.to_dict(), hf.state_dict(),
                                             overrides={"dropout_rate": 0.0})
    assert name == "bert_tiny" and model.config.dropout_rate == 0.0
    assert params["mlm_bias"].dtype == np.float32
    with pytest.raises(ValueError, match="contradict"):
        from_hf_state_dict(hf.config.to_dict(), hf.state_dict(), overrides={"num_layers": 3})


def test_mask_token_from_vocab_txt(bert_mlm_dir, tmp_path):
    path, _ = bert_mlm_dir
    for file in ("config.json", "model.safetensors"):
        (tmp_path / file).write_bytes((path / file).read_bytes())
    _, model, _ = load_hf_checkpoint(tmp_path)
    assert model.config.mask_token_id == V - 1  # no tokenizer; 103 is outside the vocabulary
    words = [f"w{i}" for i in range(V)]
    words[5] = "[MASK]"
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    _, model, _ = load_hf_checkpoint(tmp_path)
    assert model.config.mask_token_id == 5


def write_config(path, config: dict):
    with open(path / "config.json", "w") as f:
        json.dump(config, f)


@pytest.mark.parametrize("field,value", [
    ("activation_function", "relu"),
    ("layer_norm_epsilon", 1e-6),
    ("scale_attn_by_inverse_layer_idx", True),
    ("reorder_and_upcast_attn", True),
])
def test_unsupported_gpt2_settings_name_the_field(gpt2_dir, tmp_path, field, value):
    path, _ = gpt2_dir
    config = json.loads((path / "config.json").read_text())
    config[field] = value
    write_config(tmp_path, config)
    (tmp_path / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match=field):
        load_hf_checkpoint(tmp_path)


def test_unsupported_bert_settings_name_the_field(bert_mlm_dir, tmp_path):
    path, _ = bert_mlm_dir
    config = json.loads((path / "config.json").read_text())
    (tmp_path / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    for field, value in (("position_embedding_type", "relative_key"), ("hidden_act", "silu"),
                         ("is_decoder", True)):
        write_config(tmp_path, {**config, field: value})
        with pytest.raises(ValueError, match=field):
            load_hf_checkpoint(tmp_path)


def test_unsupported_model_type_and_missing_files(gpt2_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_hf_checkpoint(tmp_path)
    write_config(tmp_path, {"model_type": "llama"})
    with pytest.raises(ValueError, match="'llama' is not supported"):
        load_hf_checkpoint(tmp_path)
    path, _ = gpt2_dir
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_hf_checkpoint(tmp_path)


def test_weights_that_do_not_fit_the_config(gpt2_dir, tmp_path):
    path, _ = gpt2_dir
    config = json.loads((path / "config.json").read_text())
    write_config(tmp_path, {**config, "n_layer": 3})
    (tmp_path / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="missing weight 'transformer.h.2"):
        load_hf_checkpoint(tmp_path)
    write_config(tmp_path, {**config, "n_layer": 1})
    with pytest.raises(ValueError, match="no place for.*h.1"):
        load_hf_checkpoint(tmp_path)
