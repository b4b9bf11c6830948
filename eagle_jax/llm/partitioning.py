"""Where the environment LLM's weights and KV cache live on a (data, model) mesh.

Megatron-style tensor parallelism over the `model` axis: attention is split by heads (q, k,
v columns; o rows), the MLP by its hidden columns (gate, up columns; down rows), and the
embedding / LM head by vocabulary rows, so each device holds 1/model of every large matrix
and XLA inserts one reduction after o and after down per layer. Rows of a batch (prompts,
slots) go over `data`. A dimension that the model axis does not divide stays replicated
(e.g. Gemma 3 270M's single KV head), so any model runs on any mesh, just with less split.
Norm scales and biases of unsplit dimensions are small and replicated.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from eagle_jax.distributed import DATA_AXIS, MODEL_AXIS

# The parameter's name in its module -> which of its axes is split over `model`.
_SPLIT_AXIS = {
    ("q", "kernel"): 0, ("k", "kernel"): 0, ("v", "kernel"): 0,  # [heads, head_dim, dim]
    ("q", "bias"): 0, ("k", "bias"): 0, ("v", "bias"): 0,        # [heads, head_dim]
    ("o", "kernel"): 1,                                          # [dim, heads, head_dim]
    ("gate", "kernel"): 0, ("up", "kernel"): 0,                  # [ffn, dim]
    ("down", "kernel"): 1,                                       # [dim, ffn]
    ("embed", "embedding"): 0,                                   # [vocab, dim]
    ("lm_head",): 0,                                             # [vocab, dim]
}


def _split(shape: tuple[int, ...], axis: int | None, mesh: Mesh,
           rows: str | None = None) -> P:
  """`axis` of `shape` over `model` when it divides evenly (else replicated); axis 0 over
  `rows` when given."""
  spec = [None] * len(shape)
  if rows is not None:
    spec[0] = rows
  if axis is not None and shape[axis] % mesh.shape[MODEL_AXIS] == 0:
    spec[axis] = MODEL_AXIS
  return P(*spec)


def param_spec(path: tuple[str, ...], shape: tuple[int, ...], mesh: Mesh) -> P:
  """The partition spec of one decoder parameter, by its path in the Flax tree."""
  axis = _SPLIT_AXIS.get(tuple(path[-2:]), _SPLIT_AXIS.get(tuple(path[-1:])))
  return _split(shape, axis, mesh)


def param_shardings(params: Any, mesh: Mesh) -> Any:
  """NamedShardings for a decoder's parameter tree (same structure)."""
  def sharding(path, x):
    names = tuple(getattr(k, "key", str(k)) for k in path)
    return NamedSharding(mesh, param_spec(names, x.shape, mesh))
  return jax.tree_util.tree_map_with_path(sharding, params)


def cache_spec(shape: tuple[int, ...], mesh: Mesh, rows: bool = True) -> P:
  """A KV cache [B, kv_heads, T, head_dim]: rows over `data` (when `rows`), heads over
  `model`."""
  return _split(shape, 1, mesh, DATA_AXIS if rows else None)
