"""The Flax decoder on tiny random models: cache, padding, sliding window, rope scaling."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eagle_jax.llm import model
from eagle_jax.llm.config import ModelConfig

ARCHS = ("llama", "gemma3")


def _setup(arch: str, seed: int = 0):
  config = ModelConfig.tiny(arch)
  params = model.init_params(config, jax.random.key(seed))
  # Random norm weights, so a norm that ignored its weight (or its 1 + w offset) would show.
  params = jax.tree_util.tree_map_with_path(
      lambda path, p: p + 0.3 * jax.random.normal(jax.random.key(len(str(path))), p.shape)
      if "scale" in str(path) else p, params)
  return config, params


def _tokens(config, shape, seed=1):
  return jax.random.randint(jax.random.key(seed), shape, 0, config.vocab_size, jnp.int32)


@pytest.mark.parametrize("arch", ARCHS)
def test_cached_decoding_matches_full_forward(arch):
  config, params = _setup(arch)
  b, prompt, total, cache_len = 2, 5, 12, 16  # 12 > window 4: local layers really slide.
  tokens = _tokens(config, (b, total))
  full = model.forward(params, config, tokens)

  step = jax.jit(model.apply, static_argnums=1)
  cache = model.init_cache(config, b, cache_len)
  slots = jnp.arange(cache_len)
  positions = jnp.broadcast_to(jnp.arange(prompt), (b, prompt))
  mask = jnp.broadcast_to(slots[None, :] <= jnp.arange(prompt)[:, None], (b, prompt, cache_len))
  logits, cache = step(params, config, tokens[:, :prompt], positions, cache, 0, mask)
  outs, compiled = [logits], []
  for i in range(prompt, total):
    mask = jnp.broadcast_to(slots <= i, (b, 1, cache_len))
    logits, cache = step(params, config, tokens[:, i:i + 1], jnp.full((b, 1), i), cache,
                         jnp.int32(i), mask)
    outs.append(logits)
    compiled.append(step._cache_size())
  np.testing.assert_allclose(jnp.concatenate(outs, 1), full, atol=1e-5, rtol=1e-5)
  assert len(set(compiled)) == 1  # write_index is traced: decoding compiles once.


@pytest.mark.parametrize("arch", ARCHS)
def test_left_padded_batch_matches_single_sequences(arch):
  config, params = _setup(arch)
  long, short = _tokens(config, (1, 9), 2), _tokens(config, (1, 6), 3)
  pad = 9 - 6
  batch = jnp.concatenate([long, jnp.pad(short, ((0, 0), (pad, 0)))], 0)
  pad_mask = jnp.arange(9)[None, :] >= jnp.asarray([[0], [pad]])
  logits = model.forward(params, config, batch, pad_mask)
  np.testing.assert_allclose(logits[0], model.forward(params, config, long)[0], atol=1e-5)
  np.testing.assert_allclose(logits[1, pad:], model.forward(params, config, short)[0], atol=1e-5)
  assert np.isfinite(np.asarray(logits)).all()  # Pad queries attend nothing: still finite.


def test_sliding_window_hides_tokens_outside_the_window():
  # One local layer (window 4): position p sees p-3..p only.
  local = dataclasses.replace(ModelConfig.tiny("gemma3"), num_layers=1)
  assert local.is_local(0)
  glob = dataclasses.replace(local, sliding_window=None)
  params = model.init_params(local, jax.random.key(0))
  tokens = _tokens(local, (1, 8))
  changed = tokens.at[0, 0].set((tokens[0, 0] + 1) % local.vocab_size)
  for config, first_same in ((local, 4), (glob, 8)):
    diff = jnp.abs(model.forward(params, config, tokens) - model.forward(params, config, changed))
    diff = np.asarray(diff.max(-1)[0])
    assert (diff[:first_same] > 1e-4).all(), (config.sliding_window, diff)
    assert (diff[first_same:] < 1e-6).all(), (config.sliding_window, diff)


def test_gemma_pattern_every_nth_layer_global():
  config = dataclasses.replace(ModelConfig.tiny("gemma3"), num_layers=12,
                               sliding_window_pattern=6)
  assert [i for i in range(12) if not config.is_local(i)] == [5, 11]
  assert not any(ModelConfig.tiny("llama").is_local(i) for i in range(2))


def test_logits_at_selects_positions():
  config, params = _setup("gemma3")
  tokens = _tokens(config, (2, 7))
  idx = jnp.asarray([[6, 2], [0, 5]], jnp.int32)
  picked = model.forward(params, config, tokens, logits_at=idx)
  full = model.forward(params, config, tokens)
  np.testing.assert_allclose(picked, jnp.take_along_axis(full, idx[..., None], 1), atol=1e-6)


@pytest.mark.parametrize("arch", ARCHS)
def test_bfloat16_params_run_close_to_float32(arch):
  config, params = _setup(arch)
  tokens = _tokens(config, (2, 6))
  ref = model.forward(params, config, tokens)
  half = model.forward(jax.tree.map(lambda p: p.astype(jnp.bfloat16), params), config, tokens)
  assert half.dtype == jnp.float32
  assert float(jnp.abs(half - ref).max()) < 0.05 * float(jnp.abs(ref).max())
  assert float(jnp.mean(jnp.argmax(half, -1) == jnp.argmax(ref, -1))) > 0.8


def test_rope_rotates_halves_and_preserves_dot_products_by_offset():
  inv_freq = model.rope_inv_freq(4, 10000.0, None)
  np.testing.assert_allclose(inv_freq, [1.0, 0.01], rtol=1e-6)
  x = jnp.asarray([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 1, 4)
  got = model.apply_rope(x, jnp.asarray([[1]]), inv_freq).ravel()
  # Pair (x0, x2) rotates by angle 1, pair (x1, x3) by 0.01 (HF rotate-half layout).
  c0, s0, c1, s1 = math.cos(1), math.sin(1), math.cos(0.01), math.sin(0.01)
  want = [1 * c0 - 3 * s0, 2 * c1 - 4 * s1, 3 * c0 + 1 * s0, 4 * c1 + 2 * s1]
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_llama3_rope_scaling_matches_llama_cpp_freq_factors():
  scaling = (("factor", 32.0), ("high_freq_factor", 4.0), ("low_freq_factor", 1.0),
             ("original_max_position_embeddings", 8192), ("rope_type", "llama3"))
  base, dim = 500000.0, 64
  ours = model.rope_inv_freq(dim, base, scaling)
  # llama.cpp's converter (LlamaModel.generate_extra_tensors) writes these divisors instead.
  freqs = 1.0 / base ** (np.arange(0, dim, 2) / dim)
  factors = []
  for f in freqs:
    wavelen = 2 * math.pi / f
    if wavelen < 8192 / 4.0:
      factors.append(1.0)
    elif wavelen > 8192 / 1.0:
      factors.append(32.0)
    else:
      smooth = (8192 / wavelen - 1.0) / (4.0 - 1.0)
      factors.append(1 / ((1 - smooth) / 32.0 + smooth))
  from_factors = model.rope_inv_freq(dim, base, (("factors", tuple(factors)),
                                                  ("rope_type", "freq_factors")))
  np.testing.assert_allclose(ours, from_factors, rtol=1e-5)
  assert ours[0] == pytest.approx(1.0) and ours[-1] < freqs[-1] / 31  # Both regimes present.
  with pytest.raises(ValueError, match="yarn"):
    model.rope_inv_freq(dim, base, (("rope_type", "yarn"),))
