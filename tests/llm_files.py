"""Tiny LLM checkpoints written the way HF's `save_pretrained` lays them out (for tests)."""

from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
import safetensors.numpy

from eagle_jax.llm.config import ModelConfig


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
