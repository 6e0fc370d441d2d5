"""Hugging Face GPT-2 (`model_type: "gpt2"`, GPT2LMHeadModel or GPT2Model) -> the zoo's `GPT`.

config.json -> `GPTConfig` fields, and the state dict -> `GPT` params. HF's Conv1D weights are
(in, out) already; `c_attn` (D, 3D) splits as (D, 3, N, H) = our fused qkv kernel. The LM head
is tied to `wte` (an untied `lm_head.weight` is refused). Keys may carry the GPT2LMHeadModel
prefix "transformer." or none (a bare GPT2Model).

Not supported (ValueError naming the field): an activation other than the tanh GELU,
layer_norm_epsilon != 1e-5, scale_attn_by_inverse_layer_idx, reorder_and_upcast_attn,
scale_attn_weights=False, cross-attention or untied embeddings.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from zoo.convert.keymap import Params, Weights, check_tied, layer_norm, unsupported
from zoo.models.gpt import GPT, stack_layers

__all__ = ["FIXED", "MODEL", "PRESET_KEYS", "config_fields", "convert", "fallback_preset",
           "overrides_from_directory", "stack_params"]

MODEL = GPT
# The sizes that pick a registered preset ("gpt2_small", ...); the checkpoint fixes them.
PRESET_KEYS = ("vocab_size", "emb_dim", "num_heads", "num_layers", "mlp_dim", "max_len")
FIXED = frozenset(PRESET_KEYS)  # `overrides` may set any other field
_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")  # both the tanh approximation


def fallback_preset(fields: Mapping[str, Any]) -> str:
    """The preset whose sizes are replaced when no preset has the checkpoint's."""
    return "gpt_tiny"


def overrides_from_directory(root: Path, config: Mapping[str, Any],
                             overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`overrides` plus config fields read from files beside config.json: none for GPT-2."""
    return dict(overrides)


def convert(config: Mapping[str, Any], state: dict[str, np.ndarray]) -> tuple[dict, Params]:
    """(GPTConfig fields, unscanned `GPT` params) from config.json and the state dict."""
    fields = config_fields(config)
    return fields, params_from_state(state, fields)


def stack_params(params: Params) -> Params:
    """Unscanned params -> scan_layers=True params (`layers`, leading axis L)."""
    return stack_layers(params)


def config_fields(config: Mapping[str, Any]) -> dict[str, Any]:
    """GPT-2's config.json -> `GPTConfig` fields; raises for settings GPT cannot reproduce."""
    act = config.get("activation_function", "gelu_new")
    if act not in _ACTIVATIONS:
        raise unsupported("activation_function", act, "GPT uses the tanh GELU, 'gelu_new'")
    eps = config.get("layer_norm_epsilon", 1e-5)
    if not math.isclose(eps, 1e-5, rel_tol=1e-6):
        raise unsupported("layer_norm_epsilon", eps, "GPT's LayerNorms use 1e-5")
    for field, supported in (("scale_attn_by_inverse_layer_idx", False),
                             ("reorder_and_upcast_attn", False), ("scale_attn_weights", True),
                             ("add_cross_attention", False), ("tie_word_embeddings", True)):
        value = config.get(field, supported)
        if value != supported:
            raise unsupported(field, value, f"GPT supports only {field}={supported}")
    emb_dim, num_heads = config["n_embd"], config["n_head"]
    if emb_dim % num_heads:
        raise ValueError(f"config.json: n_embd={emb_dim} is not divisible by n_head={num_heads}.")
    return {"vocab_size": config["vocab_size"], "emb_dim": emb_dim, "num_heads": num_heads,
            "num_layers": config["n_layer"], "mlp_dim": config.get("n_inner") or 4 * emb_dim,
            "max_len": config.get("n_positions", config.get("n_ctx", 1024)),
            "dropout_rate": float(config.get("resid_pdrop", 0.1))}


def params_from_state(state: dict[str, np.ndarray], f: Mapping[str, Any]) -> Params:
    """GPT-2 state dict -> `GPT` params with `layers_{i}`; every weight must find a place."""
    w = Weights(state)
    p = "transformer." if any(k.startswith("transformer.") for k in state) else ""
    d, n, ff = f["emb_dim"], f["num_heads"], f["mlp_dim"]
    h = d // n
    wte = w.get(f"{p}wte.weight", (f["vocab_size"], d))  # (V, D), also the LM head
    params: Params = {"wte": {"embedding": wte}, "wpe": w.get(f"{p}wpe.weight", (f["max_len"], d)),
                      "ln_f": layer_norm(w, f"{p}ln_f", d)}
    for i in range(f["num_layers"]):
        b = f"{p}h.{i}."
        params[f"layers_{i}"] = {
            "ln_attn": layer_norm(w, b + "ln_1", d),
            "attn": {  # qkv kernel (D, 3, N, H), bias (3, N, H); out kernel (N, H, D)
                "qkv": {"kernel": w.get(b + "attn.c_attn.weight", (d, 3 * d)).reshape(d, 3, n, h),
                        "bias": w.get(b + "attn.c_attn.bias", (3 * d,)).reshape(3, n, h)},
                "out": {"kernel": w.get(b + "attn.c_proj.weight", (d, d)).reshape(n, h, d),
                        "bias": w.get(b + "attn.c_proj.bias", (d,))},
            },
            "ln_mlp": layer_norm(w, b + "ln_2", d),
            "mlp": {"fc": {"kernel": w.get(b + "mlp.c_fc.weight", (d, ff)),  # (D, F)
                           "bias": w.get(b + "mlp.c_fc.bias", (ff,))},
                    "proj": {"kernel": w.get(b + "mlp.c_proj.weight", (ff, d)),  # (F, D)
                             "bias": w.get(b + "mlp.c_proj.bias", (d,))}},
        }
    check_tied(w, "lm_head.weight", wte, "the token embedding (wte)")
    w.check_all_used()
    return params
