"""The native decode kernels: GGUF-block products equal the dequantised matrix's, attention
over the cache equals the float64 contractions, both are picked for decode steps only, and a
sampler decoding with them writes what XLA's float32 decoder writes."""

from __future__ import annotations

import dataclasses

import gguf
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eagle_jax import distributed
from eagle_jax.errors import EagleError
from eagle_jax.llm import model, native_kernels, sampler as sampler_lib, weights
from eagle_jax.llm.config import ModelConfig
from tests.llm_files import gguf_tensors, write_gguf

REASON = native_kernels.unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"no native kernels here: {REASON}")


def _quantized(qtype: str, n: int, k: int, seed: int = 0):
  """(blocks [n, k/32, bytes], the float32 matrix they dequantise to [n, k])."""
  t = gguf.GGMLQuantizationType[qtype]
  w = np.random.default_rng(seed).standard_normal((n, k)).astype(np.float32)
  raw = gguf.quants.quantize(w, t)
  dense = np.asarray(gguf.quants.dequantize(raw, t), np.float32).reshape(n, k)
  return raw.reshape(n, k // native_kernels.BLOCK, native_kernels.BLOCK_BYTES[qtype]), dense


@pytest.mark.parametrize("qtype", ["Q4_1", "Q8_0"])
# Rows multiplied as blocks are expanded (1-8), and in float32 panels with every remainder tile.
@pytest.mark.parametrize("rows", [1, 3, 8, 9, 14, 32, 64])
@pytest.mark.parametrize("n", [40, 1000])  # One chunk of output rows, and several threads'.
def test_product_equals_the_dequantised_matrix(qtype, rows, n):
  blocks, dense = _quantized(qtype, n, 96)
  x = np.random.default_rng(1).standard_normal((rows, 96)).astype(np.float32)
  got = jax.jit(native_kernels.matmul)(jnp.asarray(x), jnp.asarray(blocks))
  want = x.astype(np.float64) @ dense.T.astype(np.float64)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-4)


def test_leading_axes_are_kept():
  blocks, dense = _quantized("Q4_1", 64, 64)
  x = np.random.default_rng(2).standard_normal((2, 3, 64)).astype(np.float32)
  got = native_kernels.matmul(jnp.asarray(x), jnp.asarray(blocks))
  assert got.shape == (2, 3, 64)
  np.testing.assert_allclose(np.asarray(got), x @ dense.T, rtol=1e-5, atol=1e-4)


def test_an_unknown_block_size_is_refused():
  with pytest.raises(Exception, match=r"\[N, K/32, 20\] \(Q4_1\)"):
    native_kernels.matmul(jnp.ones((1, 32)), jnp.zeros((4, 1, 21), jnp.uint8)).block_until_ready()


@pytest.mark.parametrize("p,g,t,d", [(1, 1, 1, 8), (7, 3, 130, 64), (4, 4, 5, 72), (2, 9, 33, 16)])
def test_attention_products_equal_float64(p, g, t, d):
  rng = np.random.default_rng(3)
  q, keys, values = (rng.standard_normal(shape).astype(np.float32)
                     for shape in ((p, g, d), (p, t, d), (p, t, d)))
  probs = rng.random((p, g, t)).astype(np.float32)
  scores = jax.jit(native_kernels.attention_scores)(jnp.asarray(q), jnp.asarray(keys))
  want = np.einsum("pgd,ptd->pgt", q.astype(np.float64), keys.astype(np.float64))
  np.testing.assert_allclose(np.asarray(scores), want, rtol=1e-5, atol=1e-4)
  out = jax.jit(native_kernels.attention_values)(jnp.asarray(probs), jnp.asarray(values))
  want = np.einsum("pgt,ptd->pgd", probs.astype(np.float64), values.astype(np.float64))
  np.testing.assert_allclose(np.asarray(out), want, rtol=1e-5, atol=1e-4)


def test_attention_refuses_a_head_dim_off_the_lanes():
  with pytest.raises(EagleError, match="head dim must be a multiple of 8"):
    native_kernels.attention_scores(jnp.ones((1, 1, 12)), jnp.ones((1, 4, 12)))


@pytest.mark.parametrize("arch", ["llama", "gemma3"])  # gemma3: windowed layers, head dim 16.
def test_native_attention_equals_xla_in_a_decode_step(arch):
  config = ModelConfig.tiny(arch)
  params = model.init_params(config, jax.random.key(0))
  b, t = 3, 12
  rng = np.random.default_rng(4)
  cache = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), jnp.float32),
                       model.init_cache(config, b, t))
  length = jnp.asarray([2, 7, 11], jnp.int32)
  tokens = jnp.asarray(rng.integers(0, config.vocab_size, (b, 1)), jnp.int32)
  mask = (jnp.arange(t)[None, :] <= length[:, None])[:, None, :]
  step = jax.jit(lambda native: model.apply(params, config, tokens, length[:, None], cache,
                                            length, mask, native=native),
                 static_argnums=0)
  (got, got_cache), (want, want_cache) = step(True), step(False)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
  # The new keys/values too: XLA may fuse the two programs' projections apart (rounding).
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got_cache,
               want_cache)


def _tiny_quantized(tmp_path):
  config = dataclasses.replace(ModelConfig.tiny("llama"), qk_norm=False)
  params = model.init_params(config, jax.random.key(0))
  path = write_gguf(tmp_path / "tiny-q.gguf", config, gguf_tensors(config, params),
                    quantize=True)
  return weights.load_model(str(path))


def test_blocks_hold_the_loaded_matrices(tmp_path):
  """Every block matrix dequantises to its float32 kernel, q/k rows unpermuted alike."""
  lm = _tiny_quantized(tmp_path)
  c = lm.config
  assert set(lm.blocks) == {f"layers_{i}" for i in range(c.num_layers)} | {"lm_head_blocks"}

  def dense(blocks):
    kind = {20: "Q4_1", 34: "Q8_0"}[blocks.shape[-1]]
    raw = np.asarray(blocks).reshape(blocks.shape[0], -1)
    return np.asarray(gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[kind]))

  for i in range(c.num_layers):
    layer, floats = lm.blocks[f"layers_{i}"], lm.params[f"layers_{i}"]
    for group, names in (("attn", "qkvo"), ("mlp", ("gate", "up", "down"))):
      for name in names:
        blocks = layer[group][name]["blocks"]
        kernel = np.asarray(floats[group][name]["kernel"]).reshape(blocks.shape[0], -1)
        np.testing.assert_array_equal(dense(blocks), kernel, err_msg=name)
  np.testing.assert_array_equal(dense(lm.blocks["lm_head_blocks"]), lm.params["lm_head"])


def test_decode_steps_use_the_kernels_and_prefill_chunks_do_not(tmp_path):
  lm = _tiny_quantized(tmp_path)
  layers = lm.config.num_layers
  with_blocks = weights.with_blocks(lm.params, lm.blocks)

  def calls(rows, params=with_blocks, native=True):
    tokens = jnp.zeros((rows, 1), jnp.int32)
    cache = model.init_cache(lm.config, rows, 8)
    mask = jnp.ones((rows, 1, 8), bool)
    jaxpr = jax.make_jaxpr(lambda p: model.apply(p, lm.config, tokens, tokens, cache, 0, mask,
                                                 native=native))(params)
    return str(jaxpr).count("ffi_call")

  rows = native_kernels.MAX_ROWS
  assert calls(rows) == 7 * layers + 1 + 2 * layers  # Products, LM head, attention.
  assert calls(rows + 1) == 0
  assert calls(rows, native=False) == 7 * layers + 1  # Blocks alone pick the products.
  assert calls(rows, params=lm.params) == 2 * layers


def test_sampler_with_the_kernel_writes_what_float32_writes(tmp_path):
  lm = _tiny_quantized(tmp_path)
  mesh = distributed.make_mesh(1)
  prompts = ["the heart", "a tale of the sea", "she ran"] * 3
  outs = []
  for native in (True, False):
    s = sampler_lib.Sampler(lm, buckets=(32,), batch_size=4, mesh=mesh, native_kernels=native)
    assert (s.native_reason is None) == native, s.native_reason
    outs.append(s.sample(prompts, max_new_tokens=12, strategy=sampler_lib.Greedy()))
  assert outs[0].token_ids == outs[1].token_ids
  for a, b in zip(outs[0].logprobs, outs[1].logprobs):
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_a_model_without_blocks_attends_natively_and_writes_what_xla_writes(tmp_path):
  floats = dataclasses.replace(_tiny_quantized(tmp_path), blocks={})
  mesh = distributed.make_mesh(1)
  outs = []
  for native in (True, False):
    s = sampler_lib.Sampler(floats, buckets=(32,), batch_size=4, mesh=mesh,
                            native_kernels=native)
    outs.append(s.sample(["the heart", "she ran"] * 3, max_new_tokens=10,
                         strategy=sampler_lib.Greedy()))
    if native:
      assert s.decode_kernels == ("native attention, XLA's products (tiny-q has no Q4_1 / Q8_0 "
                                  "GGUF matrices)")
  assert outs[0].token_ids == outs[1].token_ids


def test_sampler_says_why_it_keeps_xla_kernels(tmp_path):
  lm = _tiny_quantized(tmp_path)
  s = sampler_lib.Sampler(lm, buckets=(32,), mesh=distributed.make_mesh(1))
  assert s.decode_kernels == "native attention and GGUF-block products"
  s = sampler_lib.Sampler(lm, buckets=(32,), mesh=distributed.make_mesh(1), native_kernels=False)
  assert s.decode_kernels == "XLA's (native kernels are off (llm.native_kernels))"
  if jax.device_count() >= 2:
    s = sampler_lib.Sampler(lm, buckets=(32,), mesh=distributed.make_mesh(2))
    assert s.native_reason == "the native kernels run on a single CPU device"
