"""Hugging Face BERT (`model_type: "bert"`) -> the zoo's `Bert`.

config.json -> `BertConfig` fields, and the state dict -> `Bert` params; Linear weights are
(out, in) and are transposed. The head comes from the weights present:
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

Not supported (ValueError naming the field): position_embedding_type other than "absolute",
is_decoder / cross-attention, an activation other than gelu / gelu_new / relu, an untied MLM
decoder, or multiple-choice / question-answering heads.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from zoo.convert.keymap import Params, Weights, check_tied, layer_norm, linear, unsupported
from zoo.models.bert import Bert
from zoo.models.gpt import stack_layers

__all__ = ["FIXED", "MODEL", "PRESET_KEYS", "config_fields", "convert", "fallback_preset",
           "head_of", "mask_token_from_tokenizer", "overrides_from_directory", "stack_params"]

MODEL = Bert
_ARCH = ("vocab_size", "emb_dim", "num_heads", "num_layers", "mlp_dim", "max_len",
         "type_vocab_size")
# The fields that pick a registered preset ("bert_base", "bert_base_classifier", ...).
PRESET_KEYS = _ARCH + ("head",)
# Config fields the checkpoint decides; `overrides` may set any other field.
FIXED = frozenset(_ARCH) | {"ln_epsilon", "activation", "head", "num_classes"}
_FALLBACKS = {"mlm": "bert_tiny", "classification": "bert_tiny_classifier",
              "tagging": "bert_tiny_tagger"}
_ACTIVATIONS = {"gelu": "gelu", "gelu_python": "gelu", "gelu_new": "gelu_tanh",
                "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu"}
_WORDPIECE_MASK_ID = 103
_UNSUPPORTED_ARCHS = ("BertForMultipleChoice", "BertForQuestionAnswering",
                      "BertForNextSentencePrediction", "BertLMHeadModel")


def fallback_preset(fields: Mapping[str, Any]) -> str:
    """The preset whose sizes are replaced when no preset has the checkpoint's (per head)."""
    return _FALLBACKS[fields["head"]]


def overrides_from_directory(root: Path, config: Mapping[str, Any],
                             overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`overrides` plus `mask_token_id` from the directory's tokenizer files, unless given:
    when vocab.txt / tokenizer.json name a [MASK] inside the vocabulary."""
    overrides = dict(overrides)
    if "mask_token_id" not in overrides:
        mask_id = mask_token_from_tokenizer(root)
        if mask_id is not None and mask_id < config.get("vocab_size", 0):
            overrides["mask_token_id"] = mask_id
    return overrides


def convert(config: Mapping[str, Any], state: dict[str, np.ndarray]) -> tuple[dict, Params]:
    """(BertConfig fields, unscanned `Bert` params) from config.json and the state dict."""
    head, num_classes, has_pooler = head_of(config, state)
    fields = config_fields(config, head, num_classes)
    return fields, params_from_state(state, fields, head, has_pooler)


def stack_params(params: Params) -> Params:
    """Unscanned params -> scan_layers=True params (the encoder's `layers`, leading axis L)."""
    return {**params, "bert": stack_layers(params["bert"])}


def config_fields(config: Mapping[str, Any], head: str, num_classes: int | None) -> dict:
    """BERT's config.json -> `BertConfig` fields; raises for settings Bert cannot reproduce."""
    kind = config.get("position_embedding_type", "absolute")
    if kind != "absolute":
        raise unsupported("position_embedding_type", kind, "Bert has absolute positions only")
    for field in ("is_decoder", "add_cross_attention"):
        if config.get(field, False):
            raise unsupported(field, config[field], "Bert is an encoder without "
                              "cross-attention")
    act = config.get("hidden_act", "gelu")
    if act not in _ACTIVATIONS:
        raise unsupported("hidden_act", act, f"choose one of {sorted(_ACTIVATIONS)}")
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
              "activation": _ACTIVATIONS[act], "head": head, "pooling": "cls",
              "pad_token_id": config.get("pad_token_id") or 0, "mask_token_id": mask_token_id}
    if num_classes is not None:
        fields["num_classes"] = num_classes
    return fields


def mask_token_from_tokenizer(root: Path) -> int | None:
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


def head_of(config: Mapping[str, Any], state: dict) -> tuple[str, int | None, bool]:
    """(head, num_classes or None, has a pooler) from the weights and `architectures`."""
    archs = config.get("architectures") or []
    for arch in _UNSUPPORTED_ARCHS:
        if arch in archs:
            raise unsupported("architectures", archs, f"{arch} has no zoo head")
    prefix = _prefix(state)
    has_pooler = f"{prefix}pooler.dense.weight" in state
    has_mlm = any(k.startswith("cls.predictions.") for k in state)
    has_classifier = "classifier.weight" in state
    if has_mlm and has_classifier:
        raise ValueError("the checkpoint has both an MLM head (cls.predictions.*) and a "
                         "classifier; expected one head.")
    if has_classifier:
        num_classes = int(state["classifier.weight"].shape[0])  # (C, D)
        if "BertForTokenClassification" in archs:
            return "tagging", num_classes, has_pooler
        if "BertForSequenceClassification" in archs or has_pooler:
            return "classification", num_classes, has_pooler
        return "tagging", num_classes, has_pooler
    return "mlm", None, has_pooler


def _prefix(state: Mapping[str, Any]) -> str:
    """"bert." for a model with a head (BertFor*), "" for a bare BertModel."""
    return "bert." if any(k.startswith("bert.") for k in state) else ""


def params_from_state(state: dict[str, np.ndarray], f: Mapping[str, Any], head: str,
                      has_pooler: bool) -> Params:
    """BERT state dict -> `Bert` params ({"bert": encoder, head...}); every weight must fit."""
    w = Weights(state)
    p = _prefix(state)
    d, n, ff = f["emb_dim"], f["num_heads"], f["mlp_dim"]
    h = d // n
    e = f"{p}embeddings."
    words = w.get(e + "word_embeddings.weight", (f["vocab_size"], d))  # (V, D)
    enc: Params = {
        "word_embeddings": {"embedding": words},
        "position_embeddings": w.get(e + "position_embeddings.weight", (f["max_len"], d)),
        "segment_embeddings": {"embedding": w.get(e + "token_type_embeddings.weight",
                                                  (f["type_vocab_size"], d))},
        "ln_embeddings": layer_norm(w, e + "LayerNorm", d),
    }
    for i in range(f["num_layers"]):
        b = f"{p}encoder.layer.{i}."
        qkv = [linear(w, f"{b}attention.self.{x}", d, d) for x in ("query", "key", "value")]
        out = linear(w, b + "attention.output.dense", d, d)
        enc[f"layers_{i}"] = {  # qkv kernel (D, 3, N, H), bias (3, N, H); out kernel (N, H, D)
            "attn": {"qkv": {"kernel": np.stack([x["kernel"].reshape(d, n, h) for x in qkv], 1),
                             "bias": np.stack([x["bias"].reshape(n, h) for x in qkv])},
                     "out": {"kernel": out["kernel"].reshape(n, h, d), "bias": out["bias"]}},
            "ln_attn": layer_norm(w, b + "attention.output.LayerNorm", d),
            "mlp": {"fc": linear(w, b + "intermediate.dense", d, ff),
                    "proj": linear(w, b + "output.dense", ff, d)},
            "ln_mlp": layer_norm(w, b + "output.LayerNorm", d),
        }
    if has_pooler:
        enc["pooler"] = linear(w, f"{p}pooler.dense", d, d)
    else:  # BertForMaskedLM / BertForTokenClassification have none; the pooled output is 0
        enc["pooler"] = {"kernel": np.zeros((d, d), np.float32), "bias": np.zeros(d, np.float32)}
    params: Params = {"bert": enc}

    if head == "mlm" and any(k.startswith("cls.predictions.") for k in state):
        c = "cls.predictions."
        params["mlm_dense"] = linear(w, c + "transform.dense", d, d)
        params["mlm_ln"] = layer_norm(w, c + "transform.LayerNorm", d)
        vocab = f["vocab_size"]
        bias_key = c + "bias" if w.has(c + "bias") else c + "decoder.bias"
        params["mlm_bias"] = w.get(bias_key, (vocab,))
        if (bias_key != c + "decoder.bias" and w.has(c + "decoder.bias")
                and not np.array_equal(w.get(c + "decoder.bias", (vocab,)), params["mlm_bias"])):
            raise ValueError("cls.predictions.decoder.bias differs from "
                             "cls.predictions.bias; expected them tied.")
        check_tied(w, c + "decoder.weight", words, "the word embeddings")
    elif head != "mlm":
        params["classifier"] = linear(w, "classifier", d, f["num_classes"])
    w.check_all_used()
    return params
