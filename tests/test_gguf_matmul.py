"""The native kernel that multiplies GGUF blocks: the dequantised matrix's product, picked for
decode steps only, and a sampler decoding with it writes what the float32 decoder writes."""

from __future__ import annotations

import dataclasses

import gguf
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eagle_jax import distributed
from eagle_jax.llm import gguf_matmul, model, sampler as sampler_lib, weights
from eagle_jax.llm.config import ModelConfig
from tests.llm_files import gguf_tensors, write_gguf

REASON = gguf_matmul.unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"no native kernel here: {REASON}")


def _quantized(qtype: str, n: int, k: int, seed: int = 0):
  """(blocks [n, k/32, bytes], the float32 matrix they dequantise to [n, k])."""
  t = gguf.GGMLQuantizationType[qtype]
  w = np.random.default_rng(seed).standard_normal((n, k)).astype(np.float32)
  raw = gguf.quants.quantize(w, t)
  dense = np.asarray(gguf.quants.dequantize(raw, t), np.float32).reshape(n, k)
  return raw.reshape(n, k // gguf_matmul.BLOCK, gguf_matmul.BLOCK_BYTES[qtype]), dense


@pytest.mark.parametrize("qtype", ["Q4_1", "Q8_0"])
@pytest.mark.parametrize("rows", [1, 3, 8, 9, 32])
@pytest.mark.parametrize("n", [40, 1000])  # One chunk of output rows, and several threads'.
def test_product_equals_the_dequantised_matrix(qtype, rows, n):
  blocks, dense = _quantized(qtype, n, 96)
  x = np.random.default_rng(1).standard_normal((rows, 96)).astype(np.float32)
  got = jax.jit(gguf_matmul.matmul)(jnp.asarray(x), jnp.asarray(blocks))
  want = x.astype(np.float64) @ dense.T.astype(np.float64)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-4)


def test_leading_axes_are_kept():
  blocks, dense = _quantized("Q4_1", 64, 64)
  x = np.random.default_rng(2).standard_normal((2, 3, 64)).astype(np.float32)
  got = gguf_matmul.matmul(jnp.asarray(x), jnp.asarray(blocks))
  assert got.shape == (2, 3, 64)
  np.testing.assert_allclose(np.asarray(got), x @ dense.T, rtol=1e-5, atol=1e-4)


def test_an_unknown_block_size_is_refused():
  with pytest.raises(Exception, match=r"\[N, K/32, 20\] \(Q4_1\)"):
    gguf_matmul.matmul(jnp.ones((1, 32)), jnp.zeros((4, 1, 21), jnp.uint8)).block_until_ready()


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


def test_decode_steps_use_the_kernel_and_prefill_chunks_do_not(tmp_path):
  lm = _tiny_quantized(tmp_path)
  params = weights.with_blocks(lm.params, lm.blocks)

  def program(rows):
    tokens = jnp.zeros((rows, 1), jnp.int32)
    cache = model.init_cache(lm.config, rows, 8)
    mask = jnp.ones((rows, 1, 8), bool)
    return str(jax.make_jaxpr(lambda p: model.apply(p, lm.config, tokens, tokens, cache, 0,
                                                    mask))(params))

  assert program(gguf_matmul.MAX_ROWS).count("ffi_call") == 7 * lm.config.num_layers + 1
  assert "ffi_call" not in program(gguf_matmul.MAX_ROWS + 1)


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


def test_sampler_says_why_it_keeps_xla_products(tmp_path):
  lm = _tiny_quantized(tmp_path)
  if jax.device_count() >= 2:
    s = sampler_lib.Sampler(lm, buckets=(32,), mesh=distributed.make_mesh(2))
    assert s.native_reason == "the native kernel runs on a single CPU device"
  floats = dataclasses.replace(lm, blocks={})
  s = sampler_lib.Sampler(floats, buckets=(32,), mesh=distributed.make_mesh(1))
  assert s.native_reason == "tiny-q has no Q4_1 / Q8_0 GGUF matrices"
