"""Tiny LLM checkpoints written the way HF's `save_pretrained` and llama.cpp's converter lay
them out (for tests)."""

from __future__ import annotations

import json
import pathlib

import gguf
import jax
import numpy as np
import safetensors.numpy
from transformers.convert_slow_tokenizer import bytes_to_unicode

from eagle_jax.llm.config import ModelConfig

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}")


def hf_tensors(config, params) -> dict[str, np.ndarray]:
  """Our tree -> tensors named and shaped as in an HF checkpoint ([out, in])."""
  c, p = config, jax.tree.map(np.asarray, params)
  gemma = c.arch == "gemma3"
  out = {"model.embed_tokens.weight": p["embed"]["embedding"],
         "model.norm.weight": p["final_norm"]["scale"]}
  if not c.tie_embeddings:
    out["lm_head.weight"] = p["lm_head"]
  for i in range(c.num_layers):
    layer, pre = p[f"layers_{i}"], f"model.layers.{i}."
    for name in "qkv":
      kernel = layer["attn"][name]["kernel"]
      out[pre + f"self_attn.{name}_proj.weight"] = kernel.reshape(-1, c.dim)
      if c.qkv_bias:
        out[pre + f"self_attn.{name}_proj.bias"] = layer["attn"][name]["bias"].reshape(-1)
    out[pre + "self_attn.o_proj.weight"] = layer["attn"]["o"]["kernel"].reshape(c.dim, -1)
    if c.qk_norm:
      out[pre + "self_attn.q_norm.weight"] = layer["attn"]["q_norm"]["scale"]
      out[pre + "self_attn.k_norm.weight"] = layer["attn"]["k_norm"]["scale"]
    for name in ("gate", "up", "down"):
      out[pre + f"mlp.{name}_proj.weight"] = layer["mlp"][name]["kernel"]
    out[pre + "input_layernorm.weight"] = layer["attn_norm"]["scale"]
    if gemma:
      out[pre + "post_attention_layernorm.weight"] = layer["post_attn_norm"]["scale"]
      out[pre + "pre_feedforward_layernorm.weight"] = layer["mlp_norm"]["scale"]
      out[pre + "post_feedforward_layernorm.weight"] = layer["post_mlp_norm"]["scale"]
    else:
      out[pre + "post_attention_layernorm.weight"] = layer["mlp_norm"]["scale"]
  return out


def hf_config(config: ModelConfig) -> dict:
  c = config
  common = dict(vocab_size=c.vocab_size, hidden_size=c.dim, intermediate_size=c.ffn_dim,
                num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
                num_key_value_heads=c.num_kv_heads, head_dim=c.head_dim,
                rms_norm_eps=c.norm_eps, tie_word_embeddings=c.tie_embeddings,
                bos_token_id=1, eos_token_id=2)
  if c.arch == "gemma3":  # 4.x-style keys: transformers normalises them to rope_parameters.
    return dict(common, model_type="gemma3_text", rope_theta=c.rope_base,
                rope_local_base_freq=c.rope_local_base, sliding_window=c.sliding_window,
                layer_types=["sliding_attention" if c.is_local(i) else "full_attention"
                             for i in range(c.num_layers)],
                query_pre_attn_scalar=int(c.query_pre_attn_scalar),
                hidden_activation="gelu_pytorch_tanh")
  return dict(common, model_type="qwen2", rope_parameters={"rope_theta": c.rope_base,
                                                          "rope_type": "default"})


def write_hf_dir(path: pathlib.Path, config: ModelConfig, tensors: dict, shards: int = 1):
  path.mkdir(parents=True, exist_ok=True)
  (path / "config.json").write_text(json.dumps(hf_config(config)))
  names = sorted(tensors)
  if shards == 1:
    safetensors.numpy.save_file(tensors, str(path / "model.safetensors"))
  else:
    weight_map = {}
    for k in range(shards):
      file = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
      part = {n: tensors[n] for n in names[k::shards]}
      safetensors.numpy.save_file(part, str(path / file))
      weight_map.update({n: file for n in part})
    (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
  return path


def vocab(size: int) -> tuple[list[str], list[str]]:
  """A byte-level BPE vocabulary: specials, the 256 byte symbols, then letter merges."""
  tokens, merges = SPECIALS + list(bytes_to_unicode().values()), []
  for a in "\u0120etaoinshr":
    for b in "etaoinshr":
      if len(tokens) < size:
        merges.append(f"{a} {b}")
        tokens.append(a + b)
  return tokens, merges


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
  """convert_hf_to_gguf.py's `LlamaModel.permute`."""
  return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
          .swapaxes(1, 2).reshape(w.shape))


def gguf_tensors(config, params) -> dict[str, np.ndarray]:
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
      x = llama_cpp_permute(x, c.num_heads if ".attn_q." in name else c.num_kv_heads)
    if c.arch == "gemma3" and name.endswith("norm.weight"):
      x = x + 1.0
    out[name] = np.asarray(x, np.float32)
  return out


def write_gguf(path: pathlib.Path, config: ModelConfig, tensors: dict, arch: str | None = None,
               quantize: bool = False):
  """A GGUF file of `tensors` (float32, or with `quantize` as the packaged SmolLM2 stores
  them: Q4_1 matrices, the embedding and LM head in Q8_0)."""
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
  tokens, merges = vocab(c.vocab_size)
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
    if quantize and x.ndim == 2:
      qtype = gguf.GGMLQuantizationType.Q8_0 if name.startswith(("token_embd", "output.")) \
          else gguf.GGMLQuantizationType.Q4_1
      w.add_tensor(name, gguf.quants.quantize(x, qtype), raw_dtype=qtype)
    else:
      w.add_tensor(name, x)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return path
