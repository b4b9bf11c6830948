"""The environment LLM: a Flax decoder for the Llama family and Gemma 3, with a static KV cache.

One network covers both families; `ModelConfig` flags switch the differences:

  llama:  x + attn(norm(x)); x + mlp(norm(x)); RMSNorm scales by w; SwiGLU; optional qkv bias
          (Qwen2) and per-head QK-norm (Qwen3); RoPE with optional Llama-3 / linear scaling.
  gemma3: sandwich norms (pre and post attention / MLP), RMSNorm scales by (1 + w), QK-norm,
          embeddings scaled by sqrt(dim), GeGLU (tanh gelu), local layers with a sliding window
          and their own RoPE base, attention scale 1/sqrt(query_pre_attn_scalar).

RoPE follows HF's rotate-half convention (first half of each head pairs with the second half).
The cache is a tuple over layers of {"k", "v"} arrays [B, Hkv, T, Dh] (heads before slots:
the layout both attention contractions read without a transpose); the caller owns the slots
(which slot holds which token) and passes the attention mask, so one `apply` serves prefill,
decoding and scoring.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from eagle_jax.llm import native_kernels
from eagle_jax.llm.config import ModelConfig

Params = Any
Cache = tuple[dict[str, jax.Array], ...]

# Finite, so a fully masked row (a pad query) gives a uniform softmax instead of NaN.
_MASKED = float(np.finfo(np.float32).min)


def rope_inv_freq(head_dim: int, base: float, scaling: tuple | None) -> np.ndarray:
  """Per-pair rotation frequencies [head_dim // 2], float32 as HF computes them."""
  inv_freq = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
  inv_freq = inv_freq.astype(np.float32)
  if scaling is None:
    return inv_freq
  s = dict(scaling)
  kind = s.get("rope_type", s.get("type", "default"))
  if kind == "default":
    return inv_freq
  if kind == "freq_factors":  # llama.cpp's rope_freqs tensor: per-pair divisors.
    return (inv_freq / np.asarray(s["factors"], np.float32)).astype(np.float32)
  if kind == "linear":
    return (inv_freq / np.float32(s["factor"])).astype(np.float32)
  if kind == "llama3":
    factor, low = float(s["factor"]), float(s["low_freq_factor"])
    high = float(s["high_freq_factor"])
    old_len = float(s["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return np.where(medium, smoothed, scaled).astype(np.float32)
  raise ValueError(f"rope_type {kind!r} is not supported; expected default, linear, llama3 "
                   f"or freq_factors")


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: np.ndarray) -> jax.Array:
  """Rotates x [B, S, H, Dh] by positions [B, S] (rotate-half layout; angles in float32)."""
  angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)  # [B, S, Dh/2]
  angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
  cos, sin = jnp.cos(angles).astype(x.dtype), jnp.sin(angles).astype(x.dtype)
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  return x * cos + rotated * sin


class RMSNorm(nn.Module):
  """RMSNorm over the last axis; `offset` scales by (1 + w) as Gemma does (w starts at 0)."""

  eps: float
  offset: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    init = nn.initializers.zeros if self.offset else nn.initializers.ones
    w = self.param("scale", init, (x.shape[-1],))
    xf = x.astype(jnp.float32)
    y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + self.eps)
    if self.offset:  # Gemma: the whole product in float32, then back to the input dtype.
      return (y * (1.0 + w.astype(jnp.float32))).astype(x.dtype)
    return w * y.astype(x.dtype)  # Llama: normalise in float32, scale in the input dtype.


class Linear(nn.Module):
  """x's last `inputs` axes times a kernel [*features, in...] (+ bias [*features]), in the
  promoted dtype of x and kernel, initialised as flax's DenseGeneral.

  The kernel is stored [out, in], as HF and GGUF store it, and is the left operand of the
  product: XLA's CPU GEMM multiplies a wide [out, in] left operand by a few activation rows
  1.5-2x faster than the transposed product at decode's batch sizes (`make bench-llm`);
  GPU and TPU compilers take either.

  Beside its kernel a Linear may hold the same matrix as GGUF "blocks" (`weights.block_tree`):
  products of a few rows (decode steps) then run in `native_kernels.matmul`, which reads 4- or
  8-bit weights instead of float32 ones.
  """

  features: tuple[int, ...]
  inputs: int = 1
  use_bias: bool = False

  @nn.compact
  def __call__(self, x):
    in_shape, out = x.shape[x.ndim - self.inputs:], len(self.features)

    def init(rng, shape, dtype=jnp.float32):  # lecun_normal over (fan-in, fan-out).
      flat = (math.prod(in_shape), math.prod(self.features))
      w = nn.initializers.lecun_normal()(rng, flat, dtype).reshape(in_shape + self.features)
      return jnp.moveaxis(w, tuple(range(self.inputs)), tuple(range(out, len(shape))))

    kernel = self.param("kernel", init, tuple(self.features) + in_shape)
    dtype = jnp.promote_types(x.dtype, kernel.dtype)
    if self.has_variable("params", "blocks") and few_rows(x, self.inputs):
      y = native_kernels.matmul(x.reshape(*x.shape[:x.ndim - self.inputs], -1),
                                self.get_variable("params", "blocks"))
      y = y.reshape(y.shape[:-1] + tuple(self.features)).astype(dtype)
    else:
      y = kernel_product(kernel.astype(dtype), x.astype(dtype), self.inputs)
    if self.use_bias:
      y = y + self.param("bias", nn.initializers.zeros, self.features).astype(y.dtype)
    return y


def few_rows(x: jax.Array, inputs: int) -> bool:
  """Whether x's rows are few enough for `native_kernels` (decode steps, not prefill chunks)."""
  return math.prod(x.shape[:x.ndim - inputs]) <= native_kernels.MAX_ROWS


def kernel_product(kernel: jax.Array, x: jax.Array, inputs: int,
                   preferred_element_type=None) -> jax.Array:
  """x [..., in...] times kernel [out..., in...] (its last `inputs` axes contracted with x's),
  computed kernel-first; returns [..., out...]."""
  out = kernel.ndim - inputs
  dims = ((tuple(range(out, kernel.ndim)), tuple(range(x.ndim - inputs, x.ndim))), ((), ()))
  y = jax.lax.dot_general(kernel, x, dims, preferred_element_type=preferred_element_type)
  return jnp.moveaxis(y, tuple(range(out)), tuple(range(y.ndim - out, y.ndim)))


def cache_scores(q: jax.Array, keys: jax.Array, native: bool) -> jax.Array:
  """Queries q [B, S, Hkv, G, D] against the cache's keys [B, Hkv, T, D]: float32 [B, Hkv, G,
  S, T]. XLA:CPU runs this as a tiny GEMM per (row, KV head); `native` runs it in
  `native_kernels`."""
  if not native:  # The cache is the left operand, as kernels are (`Linear`): faster on CPU.
    return jnp.einsum("bktd,bskgd->bkgst", keys.astype(q.dtype), q,
                      preferred_element_type=jnp.float32)
  b, s, h, g, d = q.shape
  t = keys.shape[2]
  scores = native_kernels.attention_scores(q.transpose(0, 2, 1, 3, 4).reshape(b * h, s * g, d),
                                           keys.reshape(b * h, t, d))
  return scores.reshape(b, h, s, g, t).transpose(0, 1, 3, 2, 4)


def cache_values(probs: jax.Array, values: jax.Array, native: bool) -> jax.Array:
  """Attention weights probs [B, Hkv, G, S, T] times the cache's values [B, Hkv, T, D]:
  [B, S, Hkv, G, D] in probs' dtype."""
  if not native:
    return jnp.einsum("bktd,bkgst->bskgd", values.astype(probs.dtype), probs)
  b, h, g, s, t = probs.shape
  d = values.shape[3]
  out = native_kernels.attention_values(probs.transpose(0, 1, 3, 2, 4).reshape(b * h, s * g, t),
                                        values.reshape(b * h, t, d))
  return out.reshape(b, h, s, g, d).transpose(0, 2, 1, 3, 4).astype(probs.dtype)


class Attention(nn.Module):
  """Grouped-query attention over a static cache, writing this call's keys/values into it.

  With `native`, decode steps attend in `native_kernels` (a single CPU device)."""

  config: ModelConfig
  local: bool
  native: bool = False

  @nn.compact
  def __call__(self, x, positions, cache, write_index, attn_mask):
    c = self.config
    b, s, _ = x.shape
    groups = c.num_heads // c.num_kv_heads
    dense = functools.partial(Linear, use_bias=c.qkv_bias)
    q = dense((c.num_heads, c.head_dim), name="q")(x)
    k = dense((c.num_kv_heads, c.head_dim), name="k")(x)
    v = dense((c.num_kv_heads, c.head_dim), name="v")(x)
    if c.qk_norm:
      q = RMSNorm(c.norm_eps, c.offset_norms, name="q_norm")(q)
      k = RMSNorm(c.norm_eps, c.offset_norms, name="k_norm")(k)
    if self.local:
      inv_freq = rope_inv_freq(c.head_dim, c.rope_local_base, None)
    else:
      inv_freq = rope_inv_freq(c.head_dim, c.rope_base, c.rope_scaling)
    q, k = apply_rope(q, positions, inv_freq), apply_rope(k, positions, inv_freq)

    # Query i of row r sits at cache slot write_index (+ r's entry when per row) + i.
    query_slot = jnp.reshape(write_index, (-1, 1)) + jnp.arange(s)  # [1 or B, S]
    if jnp.ndim(write_index) == 0:
      start = (0, 0, write_index, 0)
      write = lambda old, new: jax.lax.dynamic_update_slice(
          old, new.swapaxes(1, 2).astype(old.dtype), start)
    else:  # Rows at their own slots; slots past the cache are dropped, never clamped.
      rows = jnp.arange(b)[:, None]
      # The two index arrays, split by the head slice, address [B, S] and take [B, S, Hkv, Dh].
      write = lambda old, new: old.at[rows, :, query_slot].set(new.astype(old.dtype),
                                                               mode="drop")
    cache_k, cache_v = write(cache["k"], k), write(cache["v"], v)

    q = q.reshape(b, s, c.num_kv_heads, groups, c.head_dim)
    native = self.native and few_rows(x, 1) and c.head_dim % native_kernels.LANES == 0
    scores = cache_scores(q, cache_k, native) * c.attn_scale
    mask = attn_mask
    if self.local:  # Slot distance = token distance: pads never sit inside a row's tokens.
      t = cache_k.shape[2]
      mask = mask & ((query_slot[:, :, None] - jnp.arange(t)) < c.sliding_window)
    scores = jnp.where(mask[:, None, None], scores, _MASKED)
    probs = jax.nn.softmax(scores, axis=-1).astype(x.dtype)
    out = cache_values(probs, cache_v, native)
    out = out.reshape(b, s, c.num_heads, c.head_dim)
    out = Linear((c.dim,), inputs=2, name="o")(out)
    return out, {"k": cache_k, "v": cache_v}


class Mlp(nn.Module):
  """Gated MLP: down(act(gate(x)) * up(x)), SwiGLU or tanh-GeGLU."""

  config: ModelConfig

  @nn.compact
  def __call__(self, x):
    c = self.config
    gate = Linear((c.ffn_dim,), name="gate")(x)
    up = Linear((c.ffn_dim,), name="up")(x)
    act = jax.nn.silu(gate) if c.act == "silu" else jax.nn.gelu(gate, approximate=True)
    return Linear((c.dim,), name="down")(act * up)


class Block(nn.Module):
  """One decoder layer; Gemma adds a norm after attention and after the MLP."""

  config: ModelConfig
  local: bool
  native: bool = False

  @nn.compact
  def __call__(self, x, positions, cache, write_index, attn_mask):
    c = self.config
    norm = functools.partial(RMSNorm, c.norm_eps, c.offset_norms)
    h, cache = Attention(c, self.local, self.native, name="attn")(
        norm(name="attn_norm")(x), positions, cache, write_index, attn_mask)
    if c.arch == "gemma3":
      h = norm(name="post_attn_norm")(h)
    x = x + h
    h = Mlp(c, name="mlp")(norm(name="mlp_norm")(x))
    if c.arch == "gemma3":
      h = norm(name="post_mlp_norm")(h)
    return x + h, cache


class Decoder(nn.Module):
  """Embedding, `num_layers` blocks, final norm and (tied or separate) LM head."""

  config: ModelConfig
  native: bool = False  # Decode attention in `native_kernels` (see `apply`).

  @nn.compact
  def __call__(self, tokens, positions, cache, write_index, attn_mask, logits_at=None):
    c = self.config
    embed = nn.Embed(c.vocab_size, c.dim, embedding_init=nn.initializers.normal(0.02),
                     name="embed")
    x = embed(tokens)
    if c.embed_scale:  # Gemma rounds sqrt(dim) to the embedding dtype first.
      x = x * jnp.asarray(math.sqrt(c.dim), x.dtype)
    new_cache = []
    for i in range(c.num_layers):
      x, layer_cache = Block(c, c.is_local(i), self.native, name=f"layers_{i}")(
          x, positions, cache[i], write_index, attn_mask)
      new_cache.append(layer_cache)
    if logits_at is not None:  # Only these positions need the (large) vocabulary projection.
      x = jnp.take_along_axis(x, logits_at[..., None], axis=1)
    x = RMSNorm(c.norm_eps, c.offset_norms, name="final_norm")(x)
    if c.tie_embeddings:
      head = embed.embedding
    else:
      head = self.param("lm_head", nn.initializers.normal(0.02), (c.vocab_size, c.dim))
    if self.has_variable("params", "lm_head_blocks") and few_rows(x, 1):
      logits = native_kernels.matmul(x, self.get_variable("params", "lm_head_blocks"))
    else:
      logits = kernel_product(head.astype(x.dtype), x, 1, preferred_element_type=jnp.float32)
    return logits, tuple(new_cache)


def init_cache(config: ModelConfig, batch_size: int, cache_length: int,
               dtype=jnp.float32) -> Cache:
  """An empty KV cache: tuple over layers of {"k", "v"}: [B, num_kv_heads, T, head_dim]."""
  shape = (batch_size, config.num_kv_heads, cache_length, config.head_dim)
  return tuple({"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
               for _ in range(config.num_layers))


def init_params(config: ModelConfig, rng: jax.Array, dtype=jnp.float32) -> Params:
  """Random parameters (for tests and shape checks), cast to `dtype`."""
  tokens = jnp.zeros((1, 1), jnp.int32)
  params = Decoder(config).init(rng, tokens, tokens, init_cache(config, 1, 1), 0,
                                jnp.ones((1, 1, 1), bool))["params"]
  return jax.tree.map(lambda p: p.astype(dtype), params)


def apply(params: Params, config: ModelConfig, tokens: jax.Array, positions: jax.Array,
          cache: Cache, write_index: jax.Array, attn_mask: jax.Array,
          logits_at: jax.Array | None = None, native: bool = False) -> tuple[jax.Array, Cache]:
  """Runs tokens [B, S] through the decoder, writing their K/V at cache slots write_index + i.

  Args:
    params: the decoder's parameter tree (compute happens in its dtype).
    config: static model config.
    tokens: int32 [B, S].
    positions: int32 [B, S] RoPE positions (any value at pads).
    cache: from `init_cache`, T slots; write_index + S must be <= T.
    write_index: int32 scalar, the slot of tokens[:, 0]; or int32 [B], each row's own slot
      (slots past the cache are then dropped: a padding row may run off its end).
    attn_mask: bool [B, S, T], True where query i may attend slot t (causal + padding, built
      by the caller); Gemma local layers additionally keep only slots within the window.
    logits_at: optional int32 [B, K] indices into S: return logits only there ([B, K, V]),
      e.g. the last prompt token at prefill, which saves a [B, S, V] projection.
    native: decode steps attend over the cache in `native_kernels`, which must be available
      (a single CPU device). Products use them wherever `params` hold GGUF blocks.

  Returns:
    (float32 logits [B, S or K, V], updated cache).
  """
  b, s = tokens.shape
  chex.assert_shape(positions, (b, s))
  chex.assert_shape(attn_mask, (b, s, cache[0]["k"].shape[2]))
  return Decoder(config, native).apply({"params": params}, tokens, positions, cache,
                                       jnp.asarray(write_index, jnp.int32), attn_mask,
                                       logits_at)


@functools.partial(jax.jit, static_argnames="config")
def forward(params: Params, config: ModelConfig, tokens: jax.Array,
            pad_mask: jax.Array | None = None,
            logits_at: jax.Array | None = None) -> jax.Array:
  """Logits [B, S, V] of whole (left-padded) sequences, with a fresh cache and causal mask.

  Positions count real tokens only, so a left-padded row gives the logits of its unpadded
  sequence.
  """
  b, s = tokens.shape
  if pad_mask is None:
    pad_mask = jnp.ones((b, s), bool)
  pad_mask = pad_mask.astype(bool)
  positions = jnp.maximum(jnp.cumsum(pad_mask, axis=1) - 1, 0).astype(jnp.int32)
  causal = jnp.tril(jnp.ones((s, s), bool))
  mask = causal[None] & pad_mask[:, None, :]
  cache = init_cache(config, b, s, params["embed"]["embedding"].dtype)
  logits, _ = apply(params, config, tokens, positions, cache, 0, mask, logits_at)
  return logits
