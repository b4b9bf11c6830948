"""Real weights into the Flax decoder: GGUF files (dequantized) and HF safetensors checkpoints.

Both sources name tensors their own way and store linear weights [out, in]; a source maps our
canonical keys to its names and undoes its own quirks, and one builder checks every shape and
lays the arrays out as the `Decoder` tree wants (kernels [out..., in...], as stored). GGUF
quirks undone here: llama.cpp permutes the q/k rows of llama-arch models for its rope layout
(`permute` in convert_hf_to_gguf.py), and stores Gemma norm weights as (1 + w).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import gguf
import jax
import jax.numpy as jnp
import numpy as np
from safetensors import safe_open
from tqdm import tqdm
import transformers

from eagle_jax.config import LLM_DTYPES
from eagle_jax.errors import EagleError
from eagle_jax.llm import native_kernels
from eagle_jax.llm import registry
from eagle_jax.llm import tokenizer as tokenizer_lib
from eagle_jax.llm.config import ModelConfig
from eagle_jax.llm.model import rope_inv_freq

GGUF_ARCHS = ("llama", "qwen2", "qwen3", "gemma3")
HF_MODEL_TYPES = ("llama", "qwen2", "qwen3", "gemma3_text", "gemma3")

# Canonical key -> (GGUF name, HF name below the model prefix); "{i}" is the layer index.
_NAMES = {
    "embed": ("token_embd.weight", "embed_tokens.weight"),
    "final_norm": ("output_norm.weight", "norm.weight"),
    "lm_head": ("output.weight", "lm_head.weight"),
    "attn_norm": ("blk.{i}.attn_norm.weight", "layers.{i}.input_layernorm.weight"),
    "q": ("blk.{i}.attn_q.weight", "layers.{i}.self_attn.q_proj.weight"),
    "k": ("blk.{i}.attn_k.weight", "layers.{i}.self_attn.k_proj.weight"),
    "v": ("blk.{i}.attn_v.weight", "layers.{i}.self_attn.v_proj.weight"),
    "q_bias": ("blk.{i}.attn_q.bias", "layers.{i}.self_attn.q_proj.bias"),
    "k_bias": ("blk.{i}.attn_k.bias", "layers.{i}.self_attn.k_proj.bias"),
    "v_bias": ("blk.{i}.attn_v.bias", "layers.{i}.self_attn.v_proj.bias"),
    "o": ("blk.{i}.attn_output.weight", "layers.{i}.self_attn.o_proj.weight"),
    "q_norm": ("blk.{i}.attn_q_norm.weight", "layers.{i}.self_attn.q_norm.weight"),
    "k_norm": ("blk.{i}.attn_k_norm.weight", "layers.{i}.self_attn.k_norm.weight"),
    # HF Llama calls its pre-MLP norm post_attention_layernorm; HF Gemma uses that name for the
    # norm after attention (see _HF_GEMMA_NAMES).
    "mlp_norm": ("blk.{i}.ffn_norm.weight", "layers.{i}.post_attention_layernorm.weight"),
    "post_attn_norm": ("blk.{i}.post_attention_norm.weight", None),
    "post_mlp_norm": ("blk.{i}.post_ffw_norm.weight",
                      "layers.{i}.post_feedforward_layernorm.weight"),
    "gate": ("blk.{i}.ffn_gate.weight", "layers.{i}.mlp.gate_proj.weight"),
    "up": ("blk.{i}.ffn_up.weight", "layers.{i}.mlp.up_proj.weight"),
    "down": ("blk.{i}.ffn_down.weight", "layers.{i}.mlp.down_proj.weight"),
}
_HF_GEMMA_NAMES = {
    "mlp_norm": "layers.{i}.pre_feedforward_layernorm.weight",
    "post_attn_norm": "layers.{i}.post_attention_layernorm.weight",
}


@dataclasses.dataclass
class LoadedModel:
  """A ready-to-run environment LLM: config, params and tokenizer conventions."""

  name: str
  config: ModelConfig
  params: Any
  tokenizer: Any  # transformers.PreTrainedTokenizerFast
  chat_template: str | None
  bos_id: int | None
  eos_ids: tuple[int, ...]
  add_bos: bool
  # The GGUF's weight matrices still in their Q4_1 / Q8_0 blocks, as a tree of
  # {"blocks": uint8 [out, in / 32, bytes]} at the params' paths (the LM head's at
  # "lm_head_blocks"), for `native_kernels.matmul`; {} when the source has none.
  blocks: Any = dataclasses.field(default_factory=dict)


# The weights' dtype that decodes fastest on each backend, for dtype="auto". bf16 halves the
# bytes a decode step reads on GPU and TPU; CPUs without bf16 units (these AVX2 / AVX-512
# machines) convert it element-wise, and SmolLM2 decodes slower in bf16 than in f32.
FASTEST_DTYPE = {"cpu": "float32", "gpu": "bfloat16", "tpu": "bfloat16"}


def resolve_dtype(dtype: Any, backend: str | None = None) -> np.dtype:
  """`dtype`, or for "auto" the fastest one on `backend` (default: JAX's default backend)."""
  if (dtype if isinstance(dtype, str) else np.dtype(dtype).name) not in LLM_DTYPES:
    raise EagleError(f"config key llm.dtype={dtype!r}: expected one of {', '.join(LLM_DTYPES)}")
  if dtype == "auto":
    dtype = FASTEST_DTYPE.get(backend or jax.default_backend(), "float32")
  return jnp.dtype(dtype)


def load_model(spec: str, dtype: Any = "float32") -> LoadedModel:
  """Loads `spec` ("smollm2", "gemma3-270m", a .gguf, an HF checkpoint dir or hub id) with
  weights in `dtype` ("auto": the fastest on this backend)."""
  files = registry.resolve(spec)
  dtype = resolve_dtype(dtype)
  if files.kind == "gguf":
    config, params, tok, blocks = _load_gguf(files.path, dtype)
  else:
    (config, params, tok), blocks = _load_hf_dir(files.path, dtype), {}
  return LoadedModel(name=files.name, config=config, params=params, tokenizer=tok.tokenizer,
                     chat_template=tok.chat_template, bos_id=tok.bos_id, eos_ids=tok.eos_ids,
                     add_bos=tok.add_bos, blocks=blocks)


def read_config(files: registry.ModelFiles) -> ModelConfig:
  """A model's shape from its files (`registry.resolve`), without reading its weights."""
  return (_open_gguf if files.kind == "gguf" else _open_hf_dir)(files.path)[0]


# ----------------------------------------------------------------------------- the builder


def build_params(config: ModelConfig, source, dtype) -> dict:
  """The `Decoder` parameter tree from a source's [out, in] tensors, shape-checked."""
  c = config
  q_dim = c.num_heads * c.head_dim

  def get(key, shape, layer=None):
    return np.asarray(source.load(key, layer, shape), dtype)

  def heads(key, n, layer):
    out = {"kernel": get(key, (n * c.head_dim, c.dim), layer).reshape(n, c.head_dim, c.dim)}
    if c.qkv_bias:
      out["bias"] = get(f"{key}_bias", (n * c.head_dim,), layer).reshape(n, c.head_dim)
    return out

  def norm(key, size, layer=None):
    return {"scale": get(key, (size,), layer)}

  params = {"embed": {"embedding": get("embed", (c.vocab_size, c.dim))},
            "final_norm": norm("final_norm", c.dim)}
  if not c.tie_embeddings:
    params["lm_head"] = get("lm_head", (c.vocab_size, c.dim))
  for i in tqdm(range(c.num_layers), desc=f"loading {source.path.name}", leave=False,
                disable=None):
    attn = {"q": heads("q", c.num_heads, i), "k": heads("k", c.num_kv_heads, i),
            "v": heads("v", c.num_kv_heads, i),
            "o": {"kernel": get("o", (c.dim, q_dim), i).reshape(c.dim, c.num_heads, c.head_dim)}}
    if c.qk_norm:
      attn["q_norm"] = norm("q_norm", c.head_dim, i)
      attn["k_norm"] = norm("k_norm", c.head_dim, i)
    layer = {"attn": attn, "attn_norm": norm("attn_norm", c.dim, i),
             "mlp_norm": norm("mlp_norm", c.dim, i),
             "mlp": {"gate": {"kernel": get("gate", (c.ffn_dim, c.dim), i)},
                     "up": {"kernel": get("up", (c.ffn_dim, c.dim), i)},
                     "down": {"kernel": get("down", (c.dim, c.ffn_dim), i)}}}
    if c.arch == "gemma3":
      layer["post_attn_norm"] = norm("post_attn_norm", c.dim, i)
      layer["post_mlp_norm"] = norm("post_mlp_norm", c.dim, i)
    params[f"layers_{i}"] = layer
  return jax.tree.map(jnp.asarray, params)


def block_tree(config: ModelConfig, source: "_GgufSource") -> dict:
  """The weight matrices a GGUF stores in blocks `native_kernels.matmul` reads, at their
  `Decoder` paths ({"blocks": ...} beside each "kernel"); the LM head (tied or not) at
  "lm_head_blocks". Matrices in other types are left to XLA's float products."""
  c = config
  tree = {}

  def put(path, key, layer=None):
    blocks = source.blocks(key, layer)
    if blocks is not None:
      node = tree
      for name in path:
        node = node.setdefault(name, {})
      node["blocks"] = blocks

  for i in range(c.num_layers):
    for key in ("q", "k", "v", "o"):
      put((f"layers_{i}", "attn", key), key, i)
    for key in ("gate", "up", "down"):
      put((f"layers_{i}", "mlp", key), key, i)
  head = source.blocks("embed" if c.tie_embeddings else "lm_head", None)
  if head is not None:
    tree["lm_head_blocks"] = head
  return tree


def with_blocks(params: dict, blocks: dict) -> dict:
  """`params` with the `block_tree` leaves merged in at their paths."""
  out = dict(params)
  for name, sub in blocks.items():
    out[name] = with_blocks(params.get(name, {}), sub) if isinstance(sub, dict) else sub
  return out


def _check_shape(path: pathlib.Path, name: str, actual: tuple[int, ...] | None,
                 expected: tuple[int, ...]) -> None:
  if actual is None:
    raise EagleError(f"{path}: tensor {name} is missing")
  if tuple(actual) != tuple(expected):
    raise EagleError(f"{path}: tensor {name} has shape {tuple(actual)}, expected "
                     f"{tuple(expected)} from the model config")


def _validate_rope(path, config_kwargs: dict) -> None:
  try:
    rope_inv_freq(config_kwargs["head_dim"], 1e4, config_kwargs.get("rope_scaling"))
  except (KeyError, ValueError) as e:
    raise EagleError(f"{path}: unsupported rope scaling "
                     f"{config_kwargs.get('rope_scaling')}: {e}") from e


# ----------------------------------------------------------------------------- GGUF


class _GgufSource:
  """Dequantized GGUF tensors, with llama.cpp's q/k permutation and Gemma norm offset undone."""

  def __init__(self, path: pathlib.Path, tensors: dict, arch: str, config: ModelConfig):
    self.path, self.tensors, self.arch, self.config = path, tensors, arch, config

  def load(self, key: str, layer: int | None, shape) -> np.ndarray:
    name = _NAMES[key][0].format(i=layer)
    t = self.tensors.get(name)
    # GGUF dims are innermost-first: the numpy shape is the reverse.
    dims = None if t is None else tuple(int(d) for d in reversed(t.shape))
    _check_shape(self.path, name, dims, shape)
    try:
      x = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32).reshape(dims)
    except (ValueError, NotImplementedError) as e:
      raise EagleError(f"{self.path}: tensor {name} ({t.tensor_type.name}) cannot be read: "
                       f"{e}") from e
    if self.arch == "llama" and key in ("q", "k", "q_bias", "k_bias"):
      n = self.config.num_heads if key.startswith("q") else self.config.num_kv_heads
      x = unpermute_rope_rows(x, n)
    if self.arch == "gemma3" and name.endswith("norm.weight"):
      x = x - 1.0
    return x

  def blocks(self, key: str, layer: int | None) -> np.ndarray | None:
    """A matrix's GGUF blocks [out, in / 32, bytes] (q/k rows unpermuted as in `load`), when
    its type is one `native_kernels.matmul` reads; else None."""
    t = self.tensors.get(_NAMES[key][0].format(i=layer))
    size = None if t is None else native_kernels.BLOCK_BYTES.get(t.tensor_type.name)
    if size is None or len(t.shape) != 2:
      return None
    rows = int(t.shape[1])
    x = np.asarray(t.data, np.uint8).reshape(rows, -1, size)
    if self.arch == "llama" and key in ("q", "k"):
      x = unpermute_rope_rows(x, self.config.num_heads if key == "q" else
                              self.config.num_kv_heads)
    return np.ascontiguousarray(x)


def unpermute_rope_rows(x: np.ndarray, num_heads: int) -> np.ndarray:
  """Inverse of llama.cpp's `permute(w, n_head)`: its interleaved rope rows -> HF's halves."""
  rows = x.reshape(num_heads, x.shape[0] // num_heads // 2, 2, *x.shape[1:])
  return rows.swapaxes(1, 2).reshape(x.shape)


def _gguf_fields(reader) -> dict[str, Any]:
  fields = {}
  for key, field in reader.fields.items():
    try:
      fields[key] = field.contents()
    except Exception:  # pylint: disable=broad-except  # Unused exotic fields: skip.
      continue
  return fields


def gguf_config(path: pathlib.Path, fields: dict[str, Any], tensors: dict) -> ModelConfig:
  """ModelConfig from a GGUF file's metadata (and which tensors it has)."""
  arch = fields.get("general.architecture")
  if arch not in GGUF_ARCHS:
    raise EagleError(f"{path}: GGUF architecture {arch!r} is not supported; supported: "
                     f"{', '.join(GGUF_ARCHS)}")

  def meta(key, default=None):
    value = fields.get(f"{arch}.{key}", default)
    if value is None:
      raise EagleError(f"{path}: GGUF metadata key {arch}.{key} is missing")
    return value

  if "token_embd.weight" not in tensors:
    raise EagleError(f"{path}: tensor token_embd.weight is missing")
  dim, heads = int(meta("embedding_length")), int(meta("attention.head_count"))
  head_dim = int(fields.get(f"{arch}.attention.key_length") or dim // heads)
  kwargs = dict(
      arch="gemma3" if arch == "gemma3" else "llama",
      vocab_size=int(tensors["token_embd.weight"].shape[1]),
      dim=dim, num_layers=int(meta("block_count")), num_heads=heads,
      num_kv_heads=int(fields.get(f"{arch}.attention.head_count_kv") or heads),
      head_dim=head_dim, ffn_dim=int(meta("feed_forward_length")),
      rope_base=float(meta("rope.freq_base", 10000.0)),
      norm_eps=float(meta("attention.layer_norm_rms_epsilon")),
      tie_embeddings="output.weight" not in tensors,
      qkv_bias="blk.0.attn_q.bias" in tensors,
      qk_norm="blk.0.attn_q_norm.weight" in tensors)
  scaling = fields.get(f"{arch}.rope.scaling.type", "none")
  if scaling == "linear":
    kwargs["rope_scaling"] = (("factor", float(meta("rope.scaling.factor"))),
                              ("rope_type", "linear"))
  elif scaling != "none":
    kwargs["rope_scaling"] = (("rope_type", scaling),)
  if "rope_freqs.weight" in tensors:  # Llama 3.x: llama.cpp stores the per-pair divisors.
    t = tensors["rope_freqs.weight"]
    factors = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float64).ravel()
    kwargs["rope_scaling"] = (("factors", tuple(float(f) for f in factors)),
                              ("rope_type", "freq_factors"))
  if arch == "gemma3":
    kwargs.update(
        sliding_window=int(meta("attention.sliding_window")),
        sliding_window_pattern=_gguf_window_pattern(path, fields, arch),
        rope_local_base=10000.0,
        # llama.cpp: 1/sqrt(head_dim), except Gemma 3 27B (62 layers): 1/sqrt(dim / heads).
        query_pre_attn_scalar=float(dim // heads if kwargs["num_layers"] == 62 else head_dim),
        embed_scale=True, act="gelu_tanh")
  _validate_rope(path, kwargs)
  return ModelConfig(**kwargs)


def _gguf_window_pattern(path: pathlib.Path, fields: dict[str, Any], arch: str) -> int:
  # Absent in most Gemma 3 files (llama.cpp hard-codes 6); newer converters write an int or a
  # per-layer list, True for a sliding-window (local) layer.
  pattern = fields.get(f"{arch}.attention.sliding_window_pattern", 6)
  if isinstance(pattern, list):
    return _window_pattern(path, [not local for local in pattern])
  return int(pattern)


def _open_gguf(path: pathlib.Path) -> tuple[ModelConfig, dict[str, Any], dict]:
  """(config, metadata fields, tensors by name) of a GGUF file; tensors are memory-mapped."""
  try:
    reader = gguf.GGUFReader(path)
  except Exception as e:  # pylint: disable=broad-except  # Any parse failure: corrupt file.
    raise EagleError(f"{path}: not a readable GGUF file (truncated or corrupt?): "
                     f"{type(e).__name__}: {e}") from e
  fields = _gguf_fields(reader)
  tensors = {t.name: t for t in reader.tensors}
  return gguf_config(path, fields, tensors), fields, tensors


def _load_gguf(path: pathlib.Path, dtype):
  config, fields, tensors = _open_gguf(path)
  arch = fields["general.architecture"]
  source = _GgufSource(path, tensors, arch, config)
  params = build_params(config, source, dtype)
  tok = tokenizer_lib.from_gguf_fields(arch, fields)
  return config, params, tok, block_tree(config, source)


# ----------------------------------------------------------------------------- HF folders


class _SafetensorsSource:
  """Tensors of an HF checkpoint folder: model.safetensors or a sharded index."""

  def __init__(self, path: pathlib.Path, model_type: str):
    self.path, self.gemma = path, model_type.startswith("gemma")
    index = path / "model.safetensors.index.json"
    if index.is_file():
      weight_map = json.loads(index.read_text())["weight_map"]
      files = sorted(set(weight_map.values()))
    else:
      files = sorted(p.name for p in path.glob("*.safetensors"))
    if not files:
      raise EagleError(f"{path}: no *.safetensors weights (model.safetensors or "
                       f"model.safetensors.index.json) next to config.json")
    self.handles, self.where = [], {}
    for name in files:
      if not (path / name).is_file():
        raise EagleError(f"{path / name} is missing (listed in model.safetensors.index.json)")
      handle = safe_open(str(path / name), framework="numpy")
      self.handles.append(handle)
      for key in handle.keys():
        self.where[key] = handle
    embed = [k for k in self.where if k.endswith("embed_tokens.weight")]
    if not embed:
      raise EagleError(f"{path}: no embed_tokens.weight tensor in the safetensors files")
    # "model." for a causal LM; multimodal Gemma 3 nests the text model one level deeper.
    self.prefix = embed[0][: -len("embed_tokens.weight")]

  def _name(self, key: str, layer: int | None) -> str:
    name = (_HF_GEMMA_NAMES.get(key) if self.gemma else None) or _NAMES[key][1]
    if key == "lm_head":
      return next((k for k in self.where if k.endswith("lm_head.weight")), "lm_head.weight")
    return self.prefix + name.format(i=layer)

  def has(self, key: str, layer: int | None = 0) -> bool:
    return self._name(key, layer) in self.where

  def load(self, key: str, layer: int | None, shape) -> np.ndarray:
    name = self._name(key, layer)
    handle = self.where.get(name)
    _check_shape(self.path, name, None if handle is None else handle.get_slice(name).get_shape(),
                 shape)
    return np.asarray(handle.get_tensor(name), np.float32)


def hf_model_type(path: pathlib.Path) -> str:
  """config.json's model_type, checked against the supported ones."""
  try:
    model_type = json.loads((path / "config.json").read_text()).get("model_type")
  except (OSError, ValueError) as e:
    raise EagleError(f"{path / 'config.json'}: cannot be read as JSON: {e}") from e
  if model_type not in HF_MODEL_TYPES:
    raise EagleError(f"{path / 'config.json'}: model_type {model_type!r} is not supported; "
                     f"supported: {', '.join(HF_MODEL_TYPES)}")
  return model_type


def hf_config(path: pathlib.Path, source: _SafetensorsSource) -> ModelConfig:
  """ModelConfig from an HF config.json (transformers normalises the rope formats); the
  checkpoint's tensors say whether there are qkv biases and QK-norms."""
  try:
    text = transformers.AutoConfig.from_pretrained(str(path)).get_text_config()
  except Exception as e:  # pylint: disable=broad-except  # Incl. huggingface_hub's validation.
    raise EagleError(f"{path / 'config.json'}: cannot be parsed: {e}") from e
  if getattr(text, "use_sliding_window", False) or getattr(text, "final_logit_softcapping", None):
    raise EagleError(f"{path / 'config.json'}: sliding-window Qwen / logit soft-capping is not "
                     f"supported")
  heads = text.num_attention_heads
  rope = dict(text.rope_parameters or {})
  gemma = text.model_type.startswith("gemma3")
  if gemma:
    local = rope.get("sliding_attention", {})
    rope = rope.get("full_attention", {})
  kwargs = dict(
      arch="gemma3" if gemma else "llama",
      vocab_size=text.vocab_size, dim=text.hidden_size, num_layers=text.num_hidden_layers,
      num_heads=heads, num_kv_heads=getattr(text, "num_key_value_heads", None) or heads,
      head_dim=getattr(text, "head_dim", None) or text.hidden_size // heads,
      ffn_dim=text.intermediate_size, rope_base=float(rope.get("rope_theta", 10000.0)),
      rope_scaling=_hf_rope_scaling(rope), norm_eps=float(text.rms_norm_eps),
      tie_embeddings=bool(getattr(text, "tie_word_embeddings", False)),
      qkv_bias=source.has("q_bias"), qk_norm=source.has("q_norm"))
  if gemma:
    kwargs.update(
        sliding_window=text.sliding_window,
        sliding_window_pattern=_window_pattern(
            path / "config.json", [t == "full_attention" for t in text.layer_types]),
        rope_local_base=float(local.get("rope_theta", 10000.0)),
        query_pre_attn_scalar=float(text.query_pre_attn_scalar), embed_scale=True,
        act="gelu_tanh")
  _validate_rope(path, kwargs)
  return ModelConfig(**kwargs)


def _hf_rope_scaling(rope: dict) -> tuple | None:
  if rope.get("rope_type", "default") == "default":
    return None
  return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in rope.items()
                      if k != "rope_theta" and v is not None))


def _window_pattern(path: pathlib.Path, is_global: list[bool]) -> int:
  """A per-layer global/local list -> N of "every Nth layer is global" (Gemma 3's layout)."""
  for n in range(1, len(is_global) + 2):
    if all(g == ((i + 1) % n == 0) for i, g in enumerate(is_global)):
      return n
  raise EagleError(f"{path}: layer layout {is_global} (True = global) is not 'every Nth layer "
                   f"global', the only Gemma 3 layout supported")


def _open_hf_dir(path: pathlib.Path) -> tuple[ModelConfig, _SafetensorsSource]:
  """(config, tensor source) of an HF checkpoint folder; only the safetensors headers are
  read."""
  source = _SafetensorsSource(path, hf_model_type(path))
  return hf_config(path, source), source


def _load_hf_dir(path: pathlib.Path, dtype):
  config, source = _open_hf_dir(path)
  params = build_params(config, source, dtype)
  tok = tokenizer_lib.from_hf_dir(path)
  return config, params, tok
