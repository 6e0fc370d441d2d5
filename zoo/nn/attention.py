"""Multi-head attention shared by every transformer family: self (optionally causal) and cross
attention, padding masks, and key/value caches for autoregressive decoding.

Every attention call goes through `dot_product_attention`, which picks a kernel with
`choose_implementation`, a pure function of (platform, dtype, head width, lengths, mask kind):

* NVIDIA GPU: cuDNN's fused flash attention (`jax.nn.dot_product_attention(...,
  implementation="cudnn")`) whenever cuDNN supports the call: bf16/fp16 operands, head width a
  multiple of 8 and at most 128, and a mask cuDNN expresses itself (none, causal, key lengths of
  right-padded sequences, both, or a one-token decoding step over a KV cache). Otherwise XLA's.
  `jax.nn.dot_product_attention(implementation=None)` would pick XLA's on a GPU, not cuDNN
  (jax 0.10-0.11), which is why the zoo chooses for itself.
* TPU: the Pallas flash-attention kernel (`jax.experimental.pallas.ops.tpu.flash_attention`)
  when both lengths are multiples of its 128-wide blocks and the mask is none / causal / key
  lengths (given to the kernel as segment ids) or segment ids; otherwise XLA's.
* CPU: the zoo's own XLA form ("blocked"): heads moved in front of the sequence axes before
  the two batched matmuls (`head_major_attention`), and causal self-attention over a whole
  sequence skips the key blocks above the diagonal (`blocked_causal_attention`). On a 2-core
  CPU that made BERT's masked attention forward + backward 38 -> 23 ms per layer: `jax.nn`'s
  XLA form contracts 5-D (B, T, K, G, H) operands with the heads in the middle, which XLA-CPU
  runs slowly.
`attention_implementation` ("xla" / "cudnn" / "blocked" / "pallas") forces one.

Masks. Padding is best given as key lengths (B,) int32 of right-padded sequences: every kernel
takes those. A boolean `mask` (True = may attend, broadcastable to (B, N, T, S); `padding_mask`
builds the key-padding one) can express anything, so it runs on XLA's or the zoo's form.
Packed rows: `q_segment_ids` (B, T) / `kv_segment_ids` (B, S) int32, 0 = padding, 1.. = the
segment (document) a token belongs to; a query attends only to keys of its own segment (and,
if causal, not after it). cuDNN takes no such mask, so on a GPU they run on XLA's kernel; the
TPU flash kernel takes them as they are; the zoo's CPU forms and XLA's apply `segment_mask`.
Softmax runs in float32 whatever the compute dtype. Attention-probability dropout is not
applied (the fused kernels have none); residual dropout is applied by the blocks.

Shapes: B batch, T query length, S key length, D model width, N heads, H head width (D = N * H).
"""
from __future__ import annotations

import functools
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.nn.dense import dense_dot_general
from zoo.nn.logical_axes import axes

Implementation = Literal["xla", "cudnn", "blocked", "pallas"] | None
IMPLEMENTATIONS = (None, "xla", "cudnn", "blocked", "pallas")
# What a call asks of the kernel: "none"; "causal"; "lengths" (key lengths); "causal_lengths";
# "decode_step" (one query over a KV cache: key lengths = cache index + 1); "dense" (a boolean
# mask of any pattern, incl. a multi-token decode over a partly filled cache); "segments" /
# "causal_segments" (packed rows: query and key segment ids).
MASK_KINDS = ("none", "causal", "lengths", "causal_lengths", "decode_step", "dense", "segments",
              "causal_segments")
CAUSAL_KINDS = ("causal", "causal_lengths", "causal_segments")

CAUSAL_BLOCK_SIZE = 64  # measured on a 2-core CPU: 32 and 128 are about as fast, 256 is no gain
CUDNN_MAX_HEAD_DIM = 128  # 256 on Hopper and later; 128 holds on every cuDNN GPU
PALLAS_BLOCK = 128  # the TPU flash kernel's default block size along both sequence axes


def choose_implementation(requested: Implementation, *, platform: str, dtype, head_dim: int,
                          q_len: int, kv_len: int, mask_kind: str) -> str:
    """The attention kernel for one call: "cudnn", "pallas", "xla" or "blocked".

    platform: "cuda", "rocm", "tpu" or "cpu" (`current_platform()`); dtype: the operands'.
    A `requested` implementation is returned as it is (after validation), except that a call
    with a boolean mask, which the fused kernels cannot take, runs on XLA's, and so does a
    call with segment ids on cuDNN. Any other call requesting "cudnn" off an NVIDIA GPU is a
    ValueError.
    """
    check_implementation(requested)
    if mask_kind not in MASK_KINDS:
        raise ValueError(f"mask_kind must be one of {MASK_KINDS}; got {mask_kind!r}.")
    segments = mask_kind in ("segments", "causal_segments")
    if requested in ("cudnn", "pallas") and mask_kind == "dense":
        return "xla"
    if requested == "cudnn" and segments:
        return "xla"
    check_platform(requested, platform)  # a call cuDNN would run
    if requested is not None:
        return requested
    if platform == "cpu":
        return "blocked"
    half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
    if platform == "cuda":
        fits = half and head_dim % 8 == 0 and head_dim <= CUDNN_MAX_HEAD_DIM
        causal_ok = mask_kind not in CAUSAL_KINDS or q_len == kv_len
        return "cudnn" if fits and causal_ok and mask_kind != "dense" and not segments else "xla"
    if platform == "tpu":
        blocks = q_len % PALLAS_BLOCK == 0 and kv_len % PALLAS_BLOCK == 0
        causal_ok = mask_kind not in CAUSAL_KINDS or q_len == kv_len
        masks = ("none", "causal", "lengths", "causal_lengths", "segments", "causal_segments")
        return "pallas" if blocks and causal_ok and mask_kind in masks else "xla"
    return "xla"


def current_platform() -> str:
    """"cuda", "rocm", "tpu" or "cpu": the default backend, with NVIDIA and AMD GPUs told apart."""
    backend = jax.default_backend()
    if backend != "gpu":
        return backend
    version = jax.devices()[0].client.platform_version.lower()
    return "rocm" if "rocm" in version or "hip" in version else "cuda"


def mask_kind(*, causal: bool, key_lengths: jax.Array | None, mask: jax.Array | None,
              segments: bool = False) -> str:
    if mask is not None or (segments and key_lengths is not None):
        return "dense"
    if segments:
        return "causal_segments" if causal else "segments"
    if key_lengths is not None:
        return "causal_lengths" if causal else "lengths"
    return "causal" if causal else "none"


def _masked_value(dtype) -> jax.Array:
    return jnp.asarray(-0.7 * float(jnp.finfo(dtype).max), dtype)  # as jax.nn masks


def _head_major(x: jax.Array) -> jax.Array:
    return x.transpose(0, 2, 1, 3)  # (B, T, N, H) <-> (B, N, T, H)


def _attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None) -> jax.Array:
    """Head-major q (B, N, t, H), k and v (B, N, s, H), mask -> (B, N, t, H); float32 softmax."""
    scale = jnp.asarray(q.shape[-1] ** -0.5, q.dtype)
    scores = jnp.einsum("bnth,bnsh->bnts", q * scale, k,
                        preferred_element_type=jnp.float32)  # (B, N, t, s)
    if mask is not None:
        scores = jnp.where(mask, scores, _masked_value(scores.dtype))
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum("bnts,bnsh->bnth", probs, v)


def head_major_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                         mask: jax.Array | None = None) -> jax.Array:
    """q (B, T, N, H), k and v (B, S, N, H), mask broadcastable to (B, N, T, S) or None ->
    (B, T, N, H).

    `jax.nn.dot_product_attention(q, k, v, mask=mask, implementation="xla")` up to float
    rounding (a fully masked query row also averages all values), computed on (B, N, T, H)
    transposes of the operands.
    """
    return _head_major(_attend(_head_major(q), _head_major(k), _head_major(v), mask))


def blocked_causal_attention(
    q: jax.Array, k: jax.Array, v: jax.Array, block_size: int = CAUSAL_BLOCK_SIZE,
    mask: jax.Array | None = None,
) -> jax.Array:
    """Causal attention that skips the key blocks no query of a block can see.

    q, k, v: (B, T, N, H) -> (B, T, N, H); `mask` (broadcastable to (B, N, T, T), e.g. a key
    padding mask) further restricts it. Queries [lo, hi) attend to keys [0, hi) only, so about
    half of the score FLOPs of the full T x T form are never computed. Equal to
    `jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=True)` up to float rounding;
    the loop over blocks is static (T / block_size blocks of one fused XLA attention each).
    """
    seq_len = q.shape[1]
    qh, kh, vh = _head_major(q), _head_major(k), _head_major(v)  # (B, N, T, H)
    if mask is not None:
        mask = jnp.broadcast_to(mask, jnp.broadcast_shapes(mask.shape, (1, 1, seq_len, seq_len)))
    outs = []
    for lo in range(0, seq_len, block_size):
        hi = min(lo + block_size, seq_len)
        visible = (jnp.arange(lo, hi)[:, None] >= jnp.arange(hi)[None, :])[None, None]  # (1,1,t,s)
        if mask is not None:
            visible = visible & mask[:, :, lo:hi, :hi]
        outs.append(_attend(qh[:, :, lo:hi], kh[:, :, :hi], vh[:, :, :hi], visible))
    if not outs:  # T = 0: no block, an empty output
        return jnp.zeros(q.shape[:3] + v.shape[3:], v.dtype)
    return _head_major(jnp.concatenate(outs, axis=2))


def lengths_mask(key_lengths: jax.Array, kv_len: int) -> jax.Array:
    """key_lengths (B,) -> key-padding mask (B, 1, 1, S): key s is visible iff s < length."""
    return padding_mask(jnp.arange(kv_len)[None, :] < key_lengths[:, None])


def segment_mask(q_segment_ids: jax.Array, kv_segment_ids: jax.Array) -> jax.Array:
    """q_segment_ids (B, T), kv_segment_ids (B, S) int -> mask (B, 1, T, S): a query sees the
    keys of its own segment. Padding (segment 0) sees padding only, so no row is fully masked."""
    return (q_segment_ids[:, :, None] == kv_segment_ids[:, None, :])[:, None]


def _pallas_flash(q, k, v, *, causal: bool, key_lengths: jax.Array | None,
                  segment_ids: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
    from jax.experimental.pallas.ops.tpu import flash_attention as tpu_flash

    segments = None
    if segment_ids is not None:
        segments = tpu_flash.SegmentIds(q=segment_ids[0].astype(jnp.int32),
                                        kv=segment_ids[1].astype(jnp.int32))
    elif key_lengths is not None:  # padded keys get segment 0, which no query (segment 1) sees
        kv_segment = (jnp.arange(k.shape[1])[None, :] < key_lengths[:, None]).astype(jnp.int32)
        segments = tpu_flash.SegmentIds(q=jnp.ones(q.shape[:2], jnp.int32), kv=kv_segment)
    out = tpu_flash.flash_attention(_head_major(q), _head_major(k), _head_major(v),
                                    segment_ids=segments, causal=causal,
                                    sm_scale=q.shape[-1] ** -0.5)
    return _head_major(out)


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, causal: bool = False,
                          key_lengths: jax.Array | None = None, mask: jax.Array | None = None,
                          implementation: Implementation = None,
                          decode_step: bool = False,
                          q_segment_ids: jax.Array | None = None,
                          kv_segment_ids: jax.Array | None = None) -> jax.Array:
    """q (B, T, N, H), k and v (B, S, N, H) -> (B, T, N, H), on the kernel
    `choose_implementation` picks (or `implementation`).

    causal: query t sees keys <= t (self-attention, T == S). key_lengths (B,) int: keys
    s >= key_lengths[b] are padding. mask: any boolean mask broadcastable to (B, N, T, S).
    decode_step: one query per row over a KV cache, its visible keys given by key_lengths.
    q_segment_ids (B, T) and kv_segment_ids (B, S) int (both or neither): packed rows, a query
    sees only keys of its own segment (`segment_mask`).
    """
    if (q_segment_ids is None) != (kv_segment_ids is None):
        raise ValueError("give both q_segment_ids and kv_segment_ids, or neither.")
    segments = q_segment_ids is not None
    kind = "decode_step" if decode_step else mask_kind(causal=causal, key_lengths=key_lengths,
                                                      mask=mask, segments=segments)
    impl = choose_implementation(implementation, platform=current_platform(), dtype=q.dtype,
                                 head_dim=q.shape[-1], q_len=q.shape[1], kv_len=k.shape[1],
                                 mask_kind=kind)
    if key_lengths is not None:
        key_lengths = key_lengths.astype(jnp.int32)
    if impl == "cudnn":
        return jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation="cudnn",
                                            key_value_seq_lengths=key_lengths)
    if impl == "pallas":
        return _pallas_flash(q, k, v, causal=causal, key_lengths=key_lengths,
                             segment_ids=(q_segment_ids, kv_segment_ids) if segments else None)
    if key_lengths is not None:
        extra = lengths_mask(key_lengths, k.shape[1])
        mask = extra if mask is None else mask & extra
    if segments:
        extra = segment_mask(q_segment_ids, kv_segment_ids)
        mask = extra if mask is None else mask & extra
    if impl == "blocked":
        if causal and q.shape[1] == k.shape[1]:
            return blocked_causal_attention(q, k, v, mask=mask)
        if causal:
            raise ValueError(f"causal attention needs T == S; got T={q.shape[1]}, "
                             f"S={k.shape[1]}.")
        return head_major_attention(q, k, v, mask)
    return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal,
                                        implementation="xla")


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                     implementation: Implementation = None) -> jax.Array:
    """Causal self-attention over a whole sequence, q, k, v: (B, T, N, H) -> (B, T, N, H)."""
    return dot_product_attention(q, k, v, causal=True, implementation=implementation)


def padding_mask(valid: jax.Array) -> jax.Array:
    """valid (B, S) bool (True at real tokens) -> key-padding mask (B, 1, 1, S)."""
    return valid[:, None, None, :]


def check_implementation(implementation: Implementation) -> None:
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"attention_implementation must be one of {IMPLEMENTATIONS}; got "
                         f"{implementation!r}.")


def check_platform(implementation: Implementation, platform: str) -> None:
    """ValueError when `implementation` is a kernel `platform` does not have: cuDNN's needs an
    NVIDIA GPU. (Pallas's TPU kernel is not refused off a TPU: its interpreter runs it on CPU.)"""
    if implementation == "cudnn" and platform != "cuda":
        raise ValueError(f"attention_implementation='cudnn' needs an NVIDIA GPU, and JAX's "
                         f"platform here is {platform!r}; leave it None (each platform's "
                         "fastest kernel) or choose 'xla'.")


def masked_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None, *,
                     causal: bool = False, implementation: Implementation = None,
                     key_lengths: jax.Array | None = None) -> jax.Array:
    """q (B, T, N, H), k and v (B, S, N, H), a boolean mask broadcastable to (B, N, T, S)
    and/or key_lengths (B,) -> (B, T, N, H) (see `dot_product_attention`)."""
    return dot_product_attention(q, k, v, causal=causal, key_lengths=key_lengths, mask=mask,
                                 implementation=implementation)


class MultiHeadAttention(nn.Module):
    """Multi-head attention: self-attention (`context=None`, fused QKV projection) or
    cross-attention (queries from `x`, keys and values from `context`, fused KV projection).

    Self-attention with `causal=True` lets position t see positions <= t. Padding: `key_lengths`
    (B,) of right-padded keys (every kernel, cuDNN's included, takes them) or a boolean `mask`
    (True = may attend, any pattern; XLA's kernel or the zoo's CPU form). Packed rows:
    `segment_ids` (B, T) of the queries (and, in self-attention, the keys) and, in
    cross-attention, `context_segment_ids` (B, S) of the keys: a token attends only within its
    segment (ignored on a filled decoding cache).

    With `decode=True` the module keeps a cache in the "cache" collection:
    * self-attention: `cached_key` / `cached_value` (B, S, N, H) and `cache_index`. Each call
      writes its T new keys at `cache_index` and attends causally over the cache (`mask` is
      ignored: decoded sequences carry no padding). The cache length S is the length of the
      sequence the cache was initialised with (see `zoo.models.gpt.init_cache`). A call may
      write several tokens at once (prompt prefill) or one (a decoding step).
    * cross-attention: `cached_context_key` / `cached_context_value` (B, S, N, H), the
      projected `context`. A call with `context` (re)computes and stores them; a call with
      `context=None` attends over the stored ones, so a decoding step never re-projects the
      encoder outputs.
    """

    num_heads: int
    causal: bool = False
    dtype: jnp.dtype = jnp.float32  # compute dtype (zoo.nn.precision)
    param_dtype: jnp.dtype = jnp.float32
    use_bias: bool = True
    kernel_init: nn.initializers.Initializer = nn.initializers.normal(0.02)
    out_kernel_init: nn.initializers.Initializer = nn.initializers.normal(0.02)
    implementation: Implementation = None
    decode: bool = False
    cross: bool = False  # cross-attention (keys/values from a context) rather than self

    @nn.compact
    def __call__(self, x: jax.Array, context: jax.Array | None = None,
                 mask: jax.Array | None = None,
                 key_lengths: jax.Array | None = None,
                 segment_ids: jax.Array | None = None,
                 context_segment_ids: jax.Array | None = None) -> jax.Array:
        """x (B, T, D), context (B, S, Dc) or None, mask (B|1, N|1, T|1, S), key_lengths (B,),
        segment_ids (B, T), context_segment_ids (B, S) -> (B, T, D)."""
        d_model = x.shape[-1]
        if d_model % self.num_heads:
            raise ValueError(
                f"emb_dim={d_model} is not divisible by num_heads={self.num_heads}; "
                "choose num_heads that divides emb_dim."
            )
        head_dim = d_model // self.num_heads
        dense = functools.partial(nn.DenseGeneral, kernel_init=self.kernel_init,
                                  use_bias=self.use_bias, dtype=self.dtype,
                                  param_dtype=self.param_dtype, dot_general=dense_dot_general)
        if self.cross:
            q = dense(features=(self.num_heads, head_dim), **self._axes("heads", "kv"),
                      name="query")(x)  # (B, T, N, H)
            k, v = self._context_keys(dense, head_dim, context)  # (B, S, N, H) each
            if (segment_ids is None) != (context_segment_ids is None):
                raise ValueError("cross-attention over packed rows needs both segment_ids "
                                 "(queries) and context_segment_ids (keys), or neither.")
            out = dot_product_attention(q, k, v, mask=mask, key_lengths=key_lengths,
                                        implementation=self.implementation,
                                        q_segment_ids=segment_ids,
                                        kv_segment_ids=context_segment_ids)
        else:
            qkv = dense(features=(3, self.num_heads, head_dim), **self._axes(None, "heads", "kv"),
                        name="qkv")(x)  # (B, T, 3, N, H)
            q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # each (B, T, N, H)
            if self.decode and self.has_variable("cache", "cached_key"):
                out = self._attend_with_cache(q, k, v)
            else:
                if self.decode:  # initialisation: create an empty cache of this length
                    self._init_cache(k, v)
                out = dot_product_attention(q, k, v, causal=self.causal, mask=mask,
                                            key_lengths=key_lengths,
                                            implementation=self.implementation,
                                            q_segment_ids=segment_ids,
                                            kv_segment_ids=segment_ids)
        return nn.DenseGeneral(
            features=d_model,
            axis=(-2, -1),
            kernel_init=axes(self.out_kernel_init, "heads", "kv", "embed"),
            bias_init=axes(nn.initializers.zeros_init(), "embed"),
            use_bias=self.use_bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            dot_general=dense_dot_general,
            name="out",
        )(out)

    def _axes(self, *out_names: str | None) -> dict:
        """Named kernel / bias initializers of a projection (D, *out) of the input."""
        return dict(kernel_init=axes(self.kernel_init, "embed", *out_names),
                    bias_init=axes(nn.initializers.zeros_init(), *out_names))

    def _context_keys(self, dense, head_dim: int,
                      context: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        if context is None:
            if not (self.decode and self.has_variable("cache", "cached_context_key")):
                raise ValueError("cross-attention needs a context (the encoder outputs), or "
                                 "decode=True with a cache filled by an earlier call.")
            return (self.get_variable("cache", "cached_context_key"),
                    self.get_variable("cache", "cached_context_value"))
        kv = dense(features=(2, self.num_heads, head_dim), **self._axes(None, "heads", "kv"),
                   name="kv")(context)  # (B, S, 2, N, H)
        k, v = kv[:, :, 0], kv[:, :, 1]
        if self.decode:
            self.put_variable("cache", "cached_context_key", k)
            self.put_variable("cache", "cached_context_value", v)
        return k, v

    def _init_cache(self, k: jax.Array, v: jax.Array) -> None:
        self.variable("cache", "cached_key", jnp.zeros, k.shape, k.dtype)
        self.variable("cache", "cached_value", jnp.zeros, v.shape, v.dtype)
        self.variable("cache", "cache_index", lambda: jnp.array(0, jnp.int32))

    def _attend_with_cache(self, q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
        cached_key = self.variable("cache", "cached_key")
        cached_value = self.variable("cache", "cached_value")
        cache_index = self.variable("cache", "cache_index")
        index = cache_index.value
        num_new, cache_len = q.shape[1], cached_key.value.shape[1]
        cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, k, (0, index, 0, 0))
        cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, v, (0, index, 0, 0))
        cache_index.value = index + num_new
        if num_new == 1:  # a decoding step: the query sees keys 0 .. index
            lengths = jnp.full((q.shape[0],), index + 1, jnp.int32)  # (B,)
            return dot_product_attention(q, cached_key.value, cached_value.value,
                                         key_lengths=lengths, decode_step=True,
                                         implementation=self.implementation)
        # Several new tokens (prefill): query t (absolute position index + t) sees keys
        # 0 .. index + t.
        query_pos = index + jnp.arange(num_new)[:, None]  # (T, 1)
        key_pos = jnp.arange(cache_len)[None, :]  # (1, S)
        mask = (key_pos <= query_pos)[None, None]  # (1, 1, T, S)
        return dot_product_attention(q, cached_key.value, cached_value.value, mask=mask,
                                     implementation=self.implementation)
