"""Loads Hugging Face GPT-2 and BERT checkpoints into the zoo's Flax `GPT` and `Bert`.

Transformers v5 has no Flax models, so this module reads the PyTorch checkpoint itself (NumPy
only; torch just for the legacy `pytorch_model.bin` format) and lays the weights out as the
zoo's modules declare them. Usage::

    from zoo.models.hf_import import load_hf_checkpoint

    name, model, params = load_hf_checkpoint("path/to/gpt2")  # a save_pretrained() directory
    logits = model.apply({"params": params}, tokens)  # (B, T, V), as GPT2LMHeadModel's

    name, model, params = load_hf_checkpoint("path/to/bert-base-uncased")
    logits = model.apply({"params": params}, tokens, lengths, segments=token_type_ids)
    sequence, pooled = model.apply({"params": params}, tokens, lengths, return_hidden=True)

The directory holds `config.json` and the weights: `model.safetensors`, a sharded
`model.safetensors.index.json` (+ shards), or `pytorch_model.bin` (+ `.index.json` shards; needs
torch). `name` is the registered preset the model was built from (`zoo.create_model(name,
**overrides)`; the overrides are the fields of `model.config` that differ from the preset):
"gpt2_small" / "gpt2_medium" / "bert_base" / "bert_large" / ... when the checkpoint has the
preset's sizes, else the family's tiny preset with the checkpoint's sizes.

GPT-2 (`model_type: "gpt2"`, GPT2LMHeadModel or GPT2Model): `GPT` params. HF's Conv1D weights
are (in, out) already; `c_attn` (D, 3D) splits as (D, 3, N, H) = our fused qkv kernel. The LM
head is tied to `wte` (an untied `lm_head.weight` is refused).

BERT (`model_type: "bert"`): `Bert` params; Linear weights are (out, in) and are transposed. The
head comes from the weights present:
* `cls.predictions.*` (BertForMaskedLM, BertForPreTraining): head "mlm". The next-sentence head
  of BertForPreTraining (`cls.seq_relationship.*`) is dropped.
* `classifier.*`: head "classification" (BertForSequenceClassification) or "tagging"
  (BertForTokenClassification), told apart by config `architectures` (else: a pooler means
  sequence classification); `num_classes` = the classifier's rows.
* neither (BertModel): params hold the encoder only, `{"bert": ...}`, and the model has head
  "mlm"; call it with `return_hidden=True` -> (last hidden states, pooled output), as
  BertModel's `last_hidden_state` / `pooler_output`. Flax reads only the parameters a call
  uses, so the missing head parameters are never looked up.
Checkpoints without a pooler (BertForMaskedLM, BertForTokenClassification) get a zero pooler:
the pooled output is then tanh(0) = 0 and means nothing. `mask_token_id` is not in
config.json: it is read from `vocab.txt` / `tokenizer.json` ("[MASK]") when the directory has
one, else it is 103 (the WordPiece vocabularies' [MASK]) when the vocabulary is that large, else
vocab_size - 1; pass `overrides={"mask_token_id": ...}` to set it.

Hugging Face's attention mask is our `lengths` (or `pad_token_id` positions when no lengths are
given), `token_type_ids` our `segments`; padded positions attend to the valid keys in both.

Not supported (ValueError naming the field): other model types; GPT-2 with an activation other
than the tanh GELU, layer_norm_epsilon != 1e-5, scale_attn_by_inverse_layer_idx,
reorder_and_upcast_attn, scale_attn_weights=False, cross-attention or untied embeddings; BERT with
position_embedding_type other than "absolute", is_decoder / cross-attention, an activation other
than gelu / gelu_new / relu, an untied MLM decoder, or multiple-choice / question-answering
heads. TensorFlow (`tf_model.h5`) and Flax (`flax_model.msgpack`) checkpoints are not read.
The inverse direction (zoo -> Hugging Face) is not provided.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from zoo.models.bert import Bert
from zoo.models.gpt import GPT
from zoo.registry import create_model, get_spec, list_models

__all__ = ["from_hf_state_dict", "load_hf_checkpoint", "load_hf_state_dict"]

Params = dict[str, Any]

_GPT_ARCH = ("vocab_size", "emb_dim", "num_heads", "num_layers", "mlp_dim", "max_len")
_BERT_ARCH = _GPT_ARCH + ("type_vocab_size",)
# Config fields the checkpoint decides; `overrides` may set any other field.
_GPT_FIXED = set(_GPT_ARCH)
_BERT_FIXED = set(_BERT_ARCH) | {"ln_epsilon", "activation", "head", "num_classes"}
_BERT_ACTIVATIONS = {"gelu": "gelu", "gelu_python": "gelu", "gelu_new": "gelu_tanh",
                     "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}
_GPT2_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")  # both the tanh approximation
_WORDPIECE_MASK_ID = 103

# Keys that carry no weights of ours: buffers of older checkpoints and dropped heads.
_IGNORED = re.compile(r"(.*\.)?(position_ids|attn\.bias|attn\.masked_bias)$"
                      r"|cls\.seq_relationship\..*")


# ----------------------------------------------------------------------------- reading files

def load_hf_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The weights of a `save_pretrained()` directory as a flat dict of NumPy arrays.

    Reads, in this order of preference: `model.safetensors`, `model.safetensors.index.json`
    (sharded), `pytorch_model.bin`, `pytorch_model.bin.index.json` (the last two need torch).
    bfloat16 tensors come back as `ml_dtypes.bfloat16` arrays.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory; pass the directory that "
                                "save_pretrained() wrote (config.json + model.safetensors).")
    if (root / "model.safetensors").is_file():
        return _read_safetensors(root / "model.safetensors")
    if (root / "model.safetensors.index.json").is_file():
        return _read_sharded(root, "model.safetensors.index.json", _read_safetensors)
    if (root / "pytorch_model.bin").is_file():
        return _read_torch(root / "pytorch_model.bin")
    if (root / "pytorch_model.bin.index.json").is_file():
        return _read_sharded(root, "pytorch_model.bin.index.json", _read_torch)
    other = [n for n in ("tf_model.h5", "flax_model.msgpack") if (root / n).is_file()]
    hint = (f" It has {', '.join(other)}, which are not read: load it in transformers and "
            "save_pretrained() it as safetensors." if other else "")
    raise FileNotFoundError(f"no weights in {root}: expected model.safetensors, "
                            "model.safetensors.index.json or pytorch_model.bin." + hint)


def _read_sharded(root: Path, index_name: str, read) -> dict[str, np.ndarray]:
    with open(root / index_name) as f:
        weight_map = json.load(f)["weight_map"]
    state: dict[str, np.ndarray] = {}
    for shard in sorted(set(weight_map.values())):
        if not (root / shard).is_file():
            raise FileNotFoundError(f"{index_name} names shard {shard!r}, which is not in {root}.")
        state.update(read(root / shard))
    missing = sorted(set(weight_map) - set(state))
    if missing:
        raise ValueError(f"{index_name} lists keys that no shard holds: {missing[:5]}.")
    return state


_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
                       "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8",
                       "U8": "uint8", "BOOL": "bool"}


def _read_safetensors(file: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    try:
        return load_file(file)
    except TypeError:  # bfloat16, which NumPy (hence safetensors.numpy) does not know
        pass
    # The format: u64 little-endian header size, a JSON header, then the raw tensor bytes.
    data = np.memmap(file, dtype=np.uint8, mode="r")
    header_size = int(data[:8].view("<u8")[0])
    header = json.loads(bytes(data[8:8 + header_size]))
    header.pop("__metadata__", None)
    body = data[8 + header_size:]
    out = {}
    for key, info in header.items():
        if info["dtype"] not in _SAFETENSORS_DTYPES:
            raise ValueError(f"{file}: tensor {key!r} has dtype {info['dtype']}, which is not "
                             "supported.")
        dtype = jnp.dtype(_SAFETENSORS_DTYPES[info["dtype"]])
        start, end = info["data_offsets"]
        out[key] = np.array(body[start:end]).view(dtype).reshape(info["shape"])
    return out


def _read_torch(file: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"{file} is a PyTorch pickle, which needs torch to read: pip install "
                          "torch (or zoo[hf]), or convert the checkpoint to safetensors "
                          "(save_pretrained() in transformers writes model.safetensors).") from e
    state = torch.load(file, map_location="cpu", weights_only=True)
    out = {}
    for key, value in state.items():
        if value.dtype == torch.bfloat16:
            out[key] = value.detach().float().numpy().astype(jnp.bfloat16)
        else:
            out[key] = value.detach().numpy()
    return out


# ----------------------------------------------------------------------------- public entry

def load_hf_checkpoint(path: str | os.PathLike, *, dtype: Any = None,
                       overrides: Mapping[str, Any] | None = None) -> tuple[str, nn.Module, Params]:
    """A Hugging Face GPT-2 / BERT directory -> (registered name, zoo model, params).

    Args:
      path: a directory with `config.json` and the weights (see `load_hf_state_dict`).
      dtype: the parameters' dtype (e.g. "bfloat16"); default float32. The compute dtype is
        the config's `compute_dtype` field (`overrides={"compute_dtype": ...}`).
      overrides: config fields the checkpoint does not fix (dropout_rate, scan_layers, remat,
        compute_dtype, attention_implementation, mask_token_id, ...). `scan_layers=True` returns the
        layers stacked under `layers` (leading axis L).

    Returns:
      (name, model, params): `model.apply({"params": params}, ...)` computes what the
      Hugging Face model computes in eval mode (see the module docstring for BERT's heads).

    Raises:
      FileNotFoundError: no config.json or no weights. ImportError: pytorch_model.bin without
      torch. ValueError: an unsupported model type or setting (named), or weights that do not
      fit the config.
    """
    root = Path(path)
    config_file = root / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"no config.json in {root}; pass the directory that "
                                "save_pretrained() wrote.")
    with open(config_file) as f:
        config = json.load(f)
    _check_model_type(config)  # before reading gigabytes of weights
    state = load_hf_state_dict(root)
    overrides = dict(overrides or {})
    if config["model_type"] == "bert" and "mask_token_id" not in overrides:
        mask_id = _mask_token_from_tokenizer(root)
        if mask_id is not None and mask_id < config.get("vocab_size", 0):
            overrides["mask_token_id"] = mask_id
    return from_hf_state_dict(config, state, dtype=dtype, overrides=overrides)


def from_hf_state_dict(config: Mapping[str, Any], state_dict: Mapping[str, Any], *,
                       dtype: Any = None, overrides: Mapping[str, Any] | None = None
                       ) -> tuple[str, nn.Module, Params]:
    """As `load_hf_checkpoint`, from a config dict and a state dict already in memory.

    E.g. `from_hf_state_dict(hf_model.config.to_dict(), hf_model.state_dict())`; the values may
    be torch tensors or NumPy arrays.
    """
    _check_model_type(config)
    state = {_normalise_key(k): _to_numpy(v) for k, v in state_dict.items()}
    overrides = dict(overrides or {})
    if config["model_type"] == "gpt2":
        fields = _gpt2_fields(config)
        name = _pick_preset(GPT, fields, _GPT_ARCH, "gpt_tiny")
        params = _gpt2_params(state, fields)
        fixed = _GPT_FIXED
    else:
        head, num_classes, has_pooler = _bert_head(config, state)
        fields = _bert_fields(config, head, num_classes)
        fallback = {"mlm": "bert_tiny", "classification": "bert_tiny_classifier",
                    "tagging": "bert_tiny_tagger"}[head]
        name = _pick_preset(Bert, fields, _BERT_ARCH + ("head",), fallback)
        params = _bert_params(state, fields, head, has_pooler)
        fixed = _BERT_FIXED
    clash = sorted(k for k, v in overrides.items() if k in fixed and v != fields[k])
    if clash:
        raise ValueError(f"overrides {clash} contradict the checkpoint, which fixes "
                         f"{', '.join(sorted(fixed))}.")
    preset = _full_preset(name)
    diff = {k: v for k, v in {**fields, **overrides}.items() if preset.get(k) != v}
    model = create_model(name, **diff)

    if model.config.scan_layers:
        if "bert" in params:
            params["bert"] = _stack_layers(params["bert"])
        else:
            params = _stack_layers(params)
    target = jnp.dtype(dtype) if dtype is not None else np.dtype(np.float32)
    params = _map(lambda a: np.ascontiguousarray(a.astype(target)), params)
    return name, model, params


# ----------------------------------------------------------------------------- configs

def _check_model_type(config: Mapping[str, Any]) -> None:
    model_type = config.get("model_type")
    if model_type not in ("gpt2", "bert"):
        raise ValueError(f"model_type {model_type!r} is not supported: load_hf_checkpoint reads "
                         "'gpt2' and 'bert' checkpoints only.")


def _unsupported(field: str, value: Any, why: str) -> ValueError:
    return ValueError(f"config.json: {field}={value!r} is not supported ({why}).")


def _gpt2_fields(config: Mapping[str, Any]) -> dict[str, Any]:
    act = config.get("activation_function", "gelu_new")
    if act not in _GPT2_ACTIVATIONS:
        raise _unsupported("activation_function", act, "GPT uses the tanh GELU, 'gelu_new'")
    eps = config.get("layer_norm_epsilon", 1e-5)
    if not math.isclose(eps, 1e-5, rel_tol=1e-6):
        raise _unsupported("layer_norm_epsilon", eps, "GPT's LayerNorms use 1e-5")
    for field, supported in (("scale_attn_by_inverse_layer_idx", False),
                             ("reorder_and_upcast_attn", False), ("scale_attn_weights", True),
                             ("add_cross_attention", False), ("tie_word_embeddings", True)):
        value = config.get(field, supported)
        if value != supported:
            raise _unsupported(field, value, f"GPT supports only {field}={supported}")
    emb_dim, num_heads = config["n_embd"], config["n_head"]
    if emb_dim % num_heads:
        raise ValueError(f"config.json: n_embd={emb_dim} is not divisible by n_head={num_heads}.")
    return {"vocab_size": config["vocab_size"], "emb_dim": emb_dim, "num_heads": num_heads,
            "num_layers": config["n_layer"], "mlp_dim": config.get("n_inner") or 4 * emb_dim,
            "max_len": config.get("n_positions", config.get("n_ctx", 1024)),
            "dropout_rate": float(config.get("resid_pdrop", 0.1))}


def _bert_fields(config: Mapping[str, Any], head: str, num_classes: int | None) -> dict:
    kind = config.get("position_embedding_type", "absolute")
    if kind != "absolute":
        raise _unsupported("position_embedding_type", kind, "Bert has absolute positions only")
    for field in ("is_decoder", "add_cross_attention"):
        if config.get(field, False):
            raise _unsupported(field, config[field], "Bert is an encoder without "
                               "cross-attention")
    act = config.get("hidden_act", "gelu")
    if act not in _BERT_ACTIVATIONS:
        raise _unsupported("hidden_act", act, f"choose one of {sorted(_BERT_ACTIVATIONS)}")
    emb_dim, num_heads = config["hidden_size"], config["num_attention_heads"]
    if emb_dim % num_heads:
        raise ValueError(f"config.json: hidden_size={emb_dim} is not divisible by "
                         f"num_attention_heads={num_heads}.")
    vocab_size = config["vocab_size"]
    mask_token_id = _WORDPIECE_MASK_ID if vocab_size > _WORDPIECE_MASK_ID else vocab_size - 1
    fields = {"vocab_size": vocab_size, "emb_dim": emb_dim, "num_heads": num_heads,
              "num_layers": config["num_hidden_layers"], "mlp_dim": config["intermediate_size"],
              "max_len": config.get("max_position_embeddings", 512),
              "type_vocab_size": config.get("type_vocab_size", 2),
              "dropout_rate": float(config.get("hidden_dropout_prob", 0.1)),
              "ln_epsilon": float(config.get("layer_norm_eps", 1e-12)),
              "activation": _BERT_ACTIVATIONS[act], "head": head, "pooling": "cls",
              "pad_token_id": config.get("pad_token_id") or 0, "mask_token_id": mask_token_id}
    if num_classes is not None:
        fields["num_classes"] = num_classes
    return fields


def _mask_token_from_tokenizer(root: Path) -> int | None:
    """The id of "[MASK]" in the directory's vocab.txt or tokenizer.json, if there is one."""
    if (root / "vocab.txt").is_file():
        with open(root / "vocab.txt", encoding="utf-8") as f:
            for i, line in enumerate(f):
                if line.rstrip("\r\n") == "[MASK]":
                    return i
    if (root / "tokenizer.json").is_file():
        with open(root / "tokenizer.json", encoding="utf-8") as f:
            tokenizer = json.load(f)
        for token in tokenizer.get("added_tokens", []):
            if token.get("content") == "[MASK]":
                return int(token["id"])
    return None


def _full_preset(name: str) -> dict[str, Any]:
    spec = get_spec(name)
    return dataclasses.asdict(spec.config_cls(**spec.preset))


def _pick_preset(module_cls: type, fields: dict, keys: tuple[str, ...], fallback: str) -> str:
    """The first registered preset of `module_cls` whose `keys` equal `fields`', else fallback."""
    for name in list_models():
        if get_spec(name).module_cls is not module_cls:
            continue
        preset = _full_preset(name)
        if all(preset[k] == fields[k] for k in keys):
            return name
    return fallback


def _bert_head(config: Mapping[str, Any], state: dict) -> tuple[str, int | None, bool]:
    """(head, num_classes or None, has a pooler) from the weights and `architectures`."""
    archs = config.get("architectures") or []
    for unsupported in ("BertForMultipleChoice", "BertForQuestionAnswering",
                        "BertForNextSentencePrediction", "BertLMHeadModel"):
        if unsupported in archs:
            raise _unsupported("architectures", archs, f"{unsupported} has no zoo head")
    prefix = _bert_prefix(state)
    has_pooler = f"{prefix}pooler.dense.weight" in state
    has_mlm = any(k.startswith("cls.predictions.") for k in state)
    has_classifier = "classifier.weight" in state
    if has_mlm and has_classifier:
        raise ValueError("the checkpoint has both an MLM head (cls.predictions.*) and a "
                         "classifier; expected one head.")
    if has_classifier:
        num_classes = int(state["classifier.weight"].shape[0])
        if "BertForTokenClassification" in archs:
            return "tagging", num_classes, has_pooler
        if "BertForSequenceClassification" in archs or has_pooler:
            return "classification", num_classes, has_pooler
        return "tagging", num_classes, has_pooler
    return "mlm", None, has_pooler


def _bert_prefix(state: Mapping[str, Any]) -> str:
    return "bert." if any(k.startswith("bert.") for k in state) else ""


# ----------------------------------------------------------------------------- weights

def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            return value.float().numpy().astype(jnp.bfloat16)
        return value.numpy()
    return np.asarray(value)


def _normalise_key(key: str) -> str:
    """Old (TF-converted) checkpoints name LayerNorm parameters gamma / beta."""
    if key.endswith(".gamma"):
        return key[:-len("gamma")] + "weight"
    if key.endswith(".beta"):
        return key[:-len("beta")] + "bias"
    return key


class _Weights:
    """Takes arrays out of a state dict by name, checking shapes; reports what was not taken."""

    def __init__(self, state: dict[str, np.ndarray]):
        self.state = state
        self.used: set[str] = set()

    def has(self, key: str) -> bool:
        return key in self.state

    def get(self, key: str, shape: tuple[int, ...]) -> np.ndarray:
        if key not in self.state:
            raise ValueError(f"missing weight {key!r} (expected shape {shape}); the checkpoint "
                             "does not fit its config.json.")
        value = self.state[key]
        if value.shape != tuple(shape):
            raise ValueError(f"weight {key!r} has shape {value.shape}; config.json implies "
                             f"{tuple(shape)}.")
        self.used.add(key)
        return value.astype(np.float32)

    def check_all_used(self) -> None:
        left = sorted(k for k in self.state if k not in self.used and not _IGNORED.fullmatch(k))
        if left:
            more = f" (and {len(left) - 10} more)" if len(left) > 10 else ""
            raise ValueError(f"the checkpoint has weights the zoo model has no place for: "
                             f"{left[:10]}{more}. Only GPT2Model / GPT2LMHeadModel and BertModel "
                             "/ BertForMaskedLM / BertForPreTraining / "
                             "BertForSequenceClassification / BertForTokenClassification are "
                             "supported.")


def _layer_norm(w: _Weights, key: str, dim: int) -> dict[str, np.ndarray]:
    return {"scale": w.get(f"{key}.weight", (dim,)), "bias": w.get(f"{key}.bias", (dim,))}


def _linear(w: _Weights, key: str, d_in: int, d_out: int) -> dict[str, np.ndarray]:
    """torch.nn.Linear (out, in) -> nn.Dense kernel (in, out)."""
    return {"kernel": w.get(f"{key}.weight", (d_out, d_in)).T,
            "bias": w.get(f"{key}.bias", (d_out,))}


def _check_tied(w: _Weights, key: str, table: np.ndarray, what: str) -> None:
    if w.has(key) and not np.array_equal(w.get(key, table.shape), table):
        raise ValueError(f"{key!r} differs from {what}: untied output embeddings are not "
                         "supported (the zoo ties them).")


def _gpt2_params(state: dict[str, np.ndarray], f: dict[str, Any]) -> Params:
    w = _Weights(state)
    p = "transformer." if any(k.startswith("transformer.") for k in state) else ""
    d, n, ff = f["emb_dim"], f["num_heads"], f["mlp_dim"]
    h = d // n
    wte = w.get(f"{p}wte.weight", (f["vocab_size"], d))
    params: Params = {"wte": {"embedding": wte}, "wpe": w.get(f"{p}wpe.weight", (f["max_len"], d)),
                      "ln_f": _layer_norm(w, f"{p}ln_f", d)}
    for i in range(f["num_layers"]):
        b = f"{p}h.{i}."
        params[f"layers_{i}"] = {
            "ln_attn": _layer_norm(w, b + "ln_1", d),
            "attn": {
                "qkv": {"kernel": w.get(b + "attn.c_attn.weight", (d, 3 * d)).reshape(d, 3, n, h),
                        "bias": w.get(b + "attn.c_attn.bias", (3 * d,)).reshape(3, n, h)},
                "out": {"kernel": w.get(b + "attn.c_proj.weight", (d, d)).reshape(n, h, d),
                        "bias": w.get(b + "attn.c_proj.bias", (d,))},
            },
            "ln_mlp": _layer_norm(w, b + "ln_2", d),
            "mlp": {"fc": {"kernel": w.get(b + "mlp.c_fc.weight", (d, ff)),
                           "bias": w.get(b + "mlp.c_fc.bias", (ff,))},
                    "proj": {"kernel": w.get(b + "mlp.c_proj.weight", (ff, d)),
                             "bias": w.get(b + "mlp.c_proj.bias", (d,))}},
        }
    _check_tied(w, "lm_head.weight", wte, "the token embedding (wte)")
    w.check_all_used()
    return params


def _bert_params(state: dict[str, np.ndarray], f: dict[str, Any], head: str,
                 has_pooler: bool) -> Params:
    w = _Weights(state)
    p = _bert_prefix(state)
    d, n, ff = f["emb_dim"], f["num_heads"], f["mlp_dim"]
    h = d // n
    e = f"{p}embeddings."
    words = w.get(e + "word_embeddings.weight", (f["vocab_size"], d))
    enc: Params = {
        "word_embeddings": {"embedding": words},
        "position_embeddings": w.get(e + "position_embeddings.weight", (f["max_len"], d)),
        "segment_embeddings": {"embedding": w.get(e + "token_type_embeddings.weight",
                                                  (f["type_vocab_size"], d))},
        "ln_embeddings": _layer_norm(w, e + "LayerNorm", d),
    }
    for i in range(f["num_layers"]):
        b = f"{p}encoder.layer.{i}."
        qkv = [_linear(w, f"{b}attention.self.{x}", d, d) for x in ("query", "key", "value")]
        out = _linear(w, b + "attention.output.dense", d, d)
        enc[f"layers_{i}"] = {
            "attn": {"qkv": {"kernel": np.stack([x["kernel"].reshape(d, n, h) for x in qkv], 1),
                             "bias": np.stack([x["bias"].reshape(n, h) for x in qkv])},
                     "out": {"kernel": out["kernel"].reshape(n, h, d), "bias": out["bias"]}},
            "ln_attn": _layer_norm(w, b + "attention.output.LayerNorm", d),
            "mlp": {"fc": _linear(w, b + "intermediate.dense", d, ff),
                    "proj": _linear(w, b + "output.dense", ff, d)},
            "ln_mlp": _layer_norm(w, b + "output.LayerNorm", d),
        }
    if has_pooler:
        enc["pooler"] = _linear(w, f"{p}pooler.dense", d, d)
    else:  # BertForMaskedLM / BertForTokenClassification have none; the pooled output is 0
        enc["pooler"] = {"kernel": np.zeros((d, d), np.float32), "bias": np.zeros(d, np.float32)}
    params: Params = {"bert": enc}

    if head == "mlm" and any(k.startswith("cls.predictions.") for k in state):
        c = "cls.predictions."
        params["mlm_dense"] = _linear(w, c + "transform.dense", d, d)
        params["mlm_ln"] = _layer_norm(w, c + "transform.LayerNorm", d)
        vocab = f["vocab_size"]
        bias_key = c + "bias" if w.has(c + "bias") else c + "decoder.bias"
        params["mlm_bias"] = w.get(bias_key, (vocab,))
        if (bias_key != c + "decoder.bias" and w.has(c + "decoder.bias")
                and not np.array_equal(w.get(c + "decoder.bias", (vocab,)), params["mlm_bias"])):
            raise ValueError("cls.predictions.decoder.bias differs from "
                                 "cls.predictions.bias; expected them tied.")
        _check_tied(w, c + "decoder.weight", words, "the word embeddings")
    elif head != "mlm":
        params["classifier"] = _linear(w, "classifier", d, f["num_classes"])
    w.check_all_used()
    return params


def _map(fn, tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _map(fn, v) for k, v in tree.items()}
    return fn(tree)


def _stack_layers(params: Params) -> Params:
    """`layers_0`, `layers_1`, ... -> `layers` with a leading layer axis (scan_layers=True)."""
    names = sorted((k for k in params if k.startswith("layers_")), key=lambda k: int(k[7:]))
    out = {k: v for k, v in params.items() if not k.startswith("layers_")}

    def stack(*trees):
        if isinstance(trees[0], dict):
            return {k: stack(*(t[k] for t in trees)) for k in trees[0]}
        return np.stack(trees)

    out["layers"] = stack(*(params[k] for k in names))
    return out
