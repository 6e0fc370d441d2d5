"""Reads checkpoint files into a flat dict of NumPy arrays: safetensors, `pytorch_model.bin`, or
a `save_pretrained()` directory holding either (whole or sharded).

NumPy (and ml_dtypes, for bfloat16) only; torch is imported only to unpickle `pytorch_model.bin`.
bfloat16 tensors come back as `ml_dtypes.bfloat16` arrays; every other dtype as stored.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np

__all__ = ["read_checkpoint_dir", "read_safetensors", "read_torch_pickle", "to_numpy"]

StateDict = dict[str, np.ndarray]

# safetensors header dtype -> NumPy dtype (bfloat16 from ml_dtypes, as jax.numpy's).
_SAFETENSORS_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16,
                       "BF16": ml_dtypes.bfloat16, "I64": np.int64, "I32": np.int32,
                       "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def read_checkpoint_dir(path: str | os.PathLike) -> StateDict:
    """The weights of a `save_pretrained()` directory as a flat dict of NumPy arrays.

    Reads, in this order of preference: `model.safetensors`, `model.safetensors.index.json`
    (sharded), `pytorch_model.bin`, `pytorch_model.bin.index.json` (the last two need torch).

    Raises:
      FileNotFoundError: not a directory, no weights in it, or a shard the index names is absent.
      ImportError: a `pytorch_model.bin` without torch. ValueError: an index key no shard holds.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory; pass the directory that "
                                "save_pretrained() wrote (config.json + model.safetensors).")
    if (root / "model.safetensors").is_file():
        return read_safetensors(root / "model.safetensors")
    if (root / "model.safetensors.index.json").is_file():
        return _read_sharded(root, "model.safetensors.index.json", read_safetensors)
    if (root / "pytorch_model.bin").is_file():
        return read_torch_pickle(root / "pytorch_model.bin")
    if (root / "pytorch_model.bin.index.json").is_file():
        return _read_sharded(root, "pytorch_model.bin.index.json", read_torch_pickle)
    other = [n for n in ("tf_model.h5", "flax_model.msgpack") if (root / n).is_file()]
    hint = (f" It has {', '.join(other)}, which are not read: load it in transformers and "
            "save_pretrained() it as safetensors." if other else "")
    raise FileNotFoundError(f"no weights in {root}: expected model.safetensors, "
                            "model.safetensors.index.json or pytorch_model.bin." + hint)


def _read_sharded(root: Path, index_name: str, read: Callable[[Path], StateDict]) -> StateDict:
    """Every shard an `*.index.json` names, merged; checks that each listed key was found."""
    with open(root / index_name) as f:
        weight_map = json.load(f)["weight_map"]  # key -> shard file name
    state: StateDict = {}
    for shard in sorted(set(weight_map.values())):
        if not (root / shard).is_file():
            raise FileNotFoundError(f"{index_name} names shard {shard!r}, which is not in {root}.")
        state.update(read(root / shard))
    missing = sorted(set(weight_map) - set(state))
    if missing:
        raise ValueError(f"{index_name} lists keys that no shard holds: {missing[:5]}.")
    return state


def read_safetensors(file: str | os.PathLike) -> StateDict:
    """A `.safetensors` file -> {key: array}; bfloat16 too, which safetensors.numpy refuses."""
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
        dtype = np.dtype(_SAFETENSORS_DTYPES[info["dtype"]])
        start, end = info["data_offsets"]  # byte range in the body
        out[key] = np.array(body[start:end]).view(dtype).reshape(info["shape"])
    return out


def read_torch_pickle(file: str | os.PathLike) -> StateDict:
    """A `torch.save`d state dict (`pytorch_model.bin`) -> {key: array}; needs torch."""
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"{file} is a PyTorch pickle, which needs torch to read: pip install "
                          "torch (or zoo[hf]), or convert the checkpoint to safetensors "
                          "(save_pretrained() in transformers writes model.safetensors).") from e
    state = torch.load(file, map_location="cpu", weights_only=True)
    return {key: to_numpy(value) for key, value in state.items()}


def to_numpy(value: Any) -> np.ndarray:
    """A torch tensor (any device, with or without grad; bfloat16 kept) or array-like -> array."""
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":  # NumPy has no bfloat16: through float32
            return value.float().numpy().astype(ml_dtypes.bfloat16)
        return value.numpy()
    return np.asarray(value)
