"""Tests of the Flax sentence encoder: sentence-transformers parity, buckets, sharding, errors."""

from __future__ import annotations

import json
import pathlib
import shutil

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

from eagle_jax.run import artifacts
from eagle_jax.errors import EagleError
from eagle_jax.world import text_encoder as te

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "minilm_reference.npz"
TINY = dict(vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=32, max_position_embeddings=128, type_vocab_size=2,
            layer_norm_eps=1e-12, model_type="bert", hidden_act="gelu",
            position_embedding_type="absolute")


def _minilm_or_skip() -> pathlib.Path:
  try:
    return te.minilm_folder()
  except EagleError as e:
    pytest.skip(str(e))


def _tiny_tensors(rng: np.random.Generator) -> dict[str, np.ndarray]:
  """Random weights under HF BERT names, torch layout ([out, in] linear weights)."""
  h, f = TINY["hidden_size"], TINY["intermediate_size"]
  normal = lambda *s: rng.normal(0, 0.5, s).astype(np.float32)
  t = {"embeddings.word_embeddings.weight": normal(TINY["vocab_size"], h),
       "embeddings.position_embeddings.weight": normal(TINY["max_position_embeddings"], h),
       "embeddings.token_type_embeddings.weight": normal(2, h),
       "embeddings.LayerNorm.weight": 1 + normal(h), "embeddings.LayerNorm.bias": normal(h),
       "pooler.dense.weight": normal(h, h)}  # Unused by sentence embeddings: ignored.
  for i in range(TINY["num_hidden_layers"]):
    p = f"encoder.layer.{i}."
    for name, (out, inp) in {"attention.self.query": (h, h), "attention.self.key": (h, h),
                             "attention.self.value": (h, h), "attention.output.dense": (h, h),
                             "intermediate.dense": (f, h), "output.dense": (h, f)}.items():
      t[p + name + ".weight"], t[p + name + ".bias"] = normal(out, inp), normal(out)
    for name in ("attention.output.LayerNorm", "output.LayerNorm"):
      t[p + name + ".weight"], t[p + name + ".bias"] = 1 + normal(h), normal(h)
  return t


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> pathlib.Path:
  """A sentence-transformers-shaped folder with a random 2-layer, 16-wide BERT."""
  folder = tmp_path_factory.mktemp("tiny_bert")
  shutil.copy(_minilm_or_skip() / "tokenizer.json", folder / "tokenizer.json")
  (folder / "config.json").write_text(json.dumps(TINY))
  save_file(_tiny_tensors(np.random.default_rng(0)), str(folder / "model.safetensors"))
  return folder


def _words(n: int) -> str:
  """A text of n word tokens (plus [CLS]/[SEP])."""
  return " ".join(["movie"] * n)


@pytest.mark.slow
def test_minilm_matches_sentence_transformers_fixture():
  _minilm_or_skip()
  ref = artifacts.read_npz(FIXTURE)
  texts = json.loads(ref["texts_json"].tobytes())
  enc = te.TextEncoder.load("minilm", max_length=int(ref["max_length"]))
  assert enc.dim == 384
  # Truncation at max_length, not at the 128 that tokenizer.json ships with.
  np.testing.assert_array_equal([len(x) for x in enc.tokenize(texts)], ref["n_tokens"])
  # batch_size 4 covers two buckets (24 and 256) and a padded, sorted batch order.
  emb = enc.encode(texts, batch_size=4)
  assert emb.dtype == np.float32 and emb.shape == ref["embeddings"].shape
  assert np.abs(emb - ref["embeddings"]).max() < 1e-4
  np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-6)


def test_length_buckets():
  assert te.length_buckets(256) == (16, 24, 32, 48, 64, 96, 128, 192, 256)
  assert te.length_buckets(100) == (16, 24, 32, 48, 64, 96, 100)
  assert te.length_buckets(16) == (16,)


def test_one_compile_per_bucket_and_padding_invariance(tiny_folder):
  enc = te.TextEncoder.load(str(tiny_folder), max_length=64, devices=jax.devices()[:1])
  short = [_words(3), _words(10)]
  medium = [_words(13), _words(5), _words(1)]  # Longest 15 tokens: still bucket 16.
  e_short = enc.encode(short, batch_size=4)
  e_medium = enc.encode(medium, batch_size=4)
  assert enc.forward._cache_size() == 1
  e_long = enc.encode([_words(40)] + short, batch_size=4)  # 42 tokens: bucket 48.
  assert enc.forward._cache_size() == 2
  # A text's embedding does not depend on its batch, its padding or the bucket it lands in.
  np.testing.assert_allclose(e_long[1:], e_short, atol=1e-5)
  alone = enc.encode([_words(5)], batch_size=4)
  np.testing.assert_allclose(alone[0], e_medium[1], atol=1e-5)
  # Different texts really give different unit vectors.
  assert np.abs(e_short[0] - e_short[1]).max() > 1e-2
  np.testing.assert_allclose(np.linalg.norm(e_medium, axis=1), 1.0, atol=1e-5)
  assert len(enc.tokenize([_words(100)])[0]) == 64  # Truncated to max_length.
  assert enc.encode([]).shape == (0, TINY["hidden_size"])
  with pytest.raises(EagleError, match="single string"):
    enc.encode("one text")


def test_sharded_encode_equals_single_device(tiny_folder):
  if jax.device_count() < 8:
    pytest.skip("needs 8 devices: XLA_FLAGS=--xla_force_host_platform_device_count=8")
  texts = [_words(n) for n in (1, 4, 9, 16, 30, 2, 7, 50, 3, 12, 21)]
  single = te.TextEncoder.load(str(tiny_folder), max_length=64, devices=jax.devices()[:1])
  sharded = te.TextEncoder.load(str(tiny_folder), max_length=64)
  assert len(sharded.batch_sharding.device_set) == 8
  # batch_size 6 is rounded up to 8 so every device gets a row.
  np.testing.assert_allclose(sharded.encode(texts, batch_size=6),
                             single.encode(texts, batch_size=6), atol=1e-5)


def test_missing_safetensors_is_an_error(tiny_folder, tmp_path):
  for name in ("config.json", "tokenizer.json"):
    shutil.copy(tiny_folder / name, tmp_path / name)
  with pytest.raises(EagleError, match="model.safetensors"):
    te.TextEncoder.load(str(tmp_path))


def test_wrong_tensor_shape_names_file_and_tensor(tiny_folder, tmp_path):
  for name in ("config.json", "tokenizer.json"):
    shutil.copy(tiny_folder / name, tmp_path / name)
  tensors = _tiny_tensors(np.random.default_rng(1))
  tensors["encoder.layer.1.intermediate.dense.weight"] = np.zeros((8, 16), np.float32)
  save_file(tensors, str(tmp_path / "model.safetensors"))
  with pytest.raises(EagleError, match=r"model\.safetensors.*encoder\.layer\.1\.intermediate"):
    te.TextEncoder.load(str(tmp_path), max_length=64)


def test_bad_config_and_max_length(tiny_folder, tmp_path):
  with pytest.raises(EagleError, match="max_length=129"):
    te.TextEncoder.load(str(tiny_folder), max_length=129)
  shutil.copytree(tiny_folder, tmp_path / "m")
  (tmp_path / "m" / "config.json").write_text(json.dumps(dict(TINY, hidden_act="relu")))
  with pytest.raises(EagleError, match="hidden_act"):
    te.TextEncoder.load(str(tmp_path / "m"), max_length=64)
  with pytest.raises(EagleError, match="nowhere.*existing folder"):
    te.TextEncoder.load(str(tmp_path / "nowhere"))
