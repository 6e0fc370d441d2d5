"""The zoo's one mixed-precision policy, shared by every model family.

Every model config has two fields:

* `compute_dtype` ("float32" | "bfloat16" | "float16"): the dtype of matmul and convolution
  operands and of activations between layers. Matmuls accumulate in float32 on every backend.
* `param_dtype` (same choices, default "float32"): the dtype parameters are created and stored
  in, and so the dtype of the optimizer state. Keep it float32 for training in bf16: the
  optimizer's small updates vanish in bf16 parameters.

Whatever `compute_dtype` is, these always run in float32:
* attention softmax (the zoo's attention upcasts the scores; cuDNN's kernel accumulates in f32),
* LayerNorm statistics (flax computes mean and variance in f32; its output is compute_dtype),
* logits and the loss (the output projection takes compute_dtype operands and returns float32;
  `zoo.nn.vocab_head`), and the recurrent cell state of the LSTM.

So "bf16 training" is `compute_dtype="bfloat16", param_dtype="float32"`, the setting of
PyTorch's `torch.autocast(dtype=torch.bfloat16)` over float32 parameters.
"""
from __future__ import annotations

import jax.numpy as jnp

DTYPES = ("float32", "bfloat16", "float16")


def dtype_of(name: str | jnp.dtype, field: str = "compute_dtype") -> jnp.dtype:
    """"bfloat16" -> jnp.bfloat16; a clear error for anything outside `DTYPES`."""
    try:
        dtype = jnp.dtype(name)
    except TypeError:
        dtype = None
    if dtype is None or dtype.name not in DTYPES:
        raise ValueError(f"{field} must be one of {DTYPES}; got {name!r}.")
    return dtype
