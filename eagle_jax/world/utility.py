"""The paper's content-gap utility (Sec. 5.2): predicted rating plus a novelty bonus.

  U(z; u) = <z_u, z> + lam * sum_{m' in kNN(z)} ||z - z_m'||_2

kNN runs over the whole catalogue of item embeddings; the anchor item can be masked out
(`exclude_index`). The bonus is unbounded, so `cap` > 0 clips it (in utility units). Both
terms are returned so that they can be logged separately.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp

from eagle_jax.errors import EagleError


def _safe_norm(x: jax.Array) -> jax.Array:
  """||x|| along the last axis with a zero (not NaN) gradient at x = 0."""
  sq = jnp.sum(x * x, axis=-1)
  positive = sq > 0
  return jnp.where(positive, jnp.sqrt(jnp.where(positive, sq, 1.0)), 0.0)


@functools.partial(jax.jit, static_argnames=("k",))
def utility(z, user_z, catalogue_z, *, lam, k: int = 3, cap=0.0,
            exclude_index=-1) -> tuple[jax.Array, jax.Array, jax.Array]:
  """U(z; u) for one item embedding z [d], user z_u [d], catalogue [M, d].

  Returns (total, rating_term, distance_term). `exclude_index` (-1: none) is left out of the
  neighbour search, so the anchor does not count as its own rewrite's neighbour.
  """
  chex.assert_rank([z, user_z, catalogue_z], [1, 1, 2])
  chex.assert_equal_shape([z, user_z, catalogue_z[0]])
  num_items = catalogue_z.shape[0]
  if not 1 <= k <= num_items:
    raise EagleError(f"utility: k must be in [1, {num_items}] (catalogue size), got {k}")
  # Select neighbours by the expanded squared distance (a matrix product under vmap, no
  # [B, M, d] difference tensor), then measure the k chosen ones exactly.
  sq = jnp.sum(catalogue_z**2, axis=-1) - 2.0 * catalogue_z @ z + jnp.sum(z**2)
  sq = jnp.where(jnp.arange(num_items) == exclude_index, jnp.inf, sq)
  _, nearest = jax.lax.top_k(-jax.lax.stop_gradient(sq), k)
  # Only reachable when k = M: the excluded item is then picked last and must not count.
  counted = nearest != exclude_index
  bonus = lam * jnp.sum(jnp.where(counted, _safe_norm(z - catalogue_z[nearest]), 0.0))
  distance_term = jnp.where(cap > 0, jnp.minimum(bonus, cap), bonus)
  rating_term = jnp.dot(user_z, z)
  return rating_term + distance_term, rating_term, distance_term


def batched_utility(z, user_z, catalogue_z, *, lam, k: int = 3, cap=0.0,
                    exclude_index=None) -> tuple[jax.Array, jax.Array, jax.Array]:
  """`utility` over a batch z [B, d]; user_z is [B, d] or one shared [d]; exclude_index [B]."""
  if exclude_index is None:
    exclude_index = jnp.full(z.shape[:1], -1, jnp.int32)
  user_axis = 0 if jnp.ndim(user_z) == 2 else None
  fn = lambda zi, ui, ei: utility(zi, ui, catalogue_z, lam=lam, k=k, cap=cap, exclude_index=ei)
  return jax.vmap(fn, in_axes=(0, user_axis, 0))(z, user_z, exclude_index)
