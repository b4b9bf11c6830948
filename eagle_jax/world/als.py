"""Weighted alternating least squares: the behavioural latent space Z of users and items.

Explicit mode minimises, over observed ratings only,

  sum_(u,i) (r_ui - <x_u, y_i>)^2 + reg * (sum_u ||x_u||^2 + sum_i ||y_i||^2).

Implicit mode (Hu, Koren & Volinsky 2008) treats every (u, i) pair: preference p = 1 with
confidence c = 1 + alpha * r where observed, p = 0 with c = 1 elsewhere. Its normal equations
use Y^T C_u Y = Y^T Y + Y^T (C_u - I) Y, so only observed entries are ever touched.

Both modes share one half-sweep: for every row at once, A = G + sum_obs w y y^T + reg I and
b = sum_obs v y, then a batched Cholesky solve. The sums run as `segment_sum` over chunks of
ratings inside a `lax.scan`, so memory is O(rows * d^2 + chunk * d^2) and the 25M-rating
MovieLens fits as easily as ml-latest-small.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from eagle_jax.errors import EagleError

# Floats held by one chunk of per-rating outer products (64 MiB): bounds peak memory.
_CHUNK_FLOATS = 1 << 24
# Floats held by one batch of user x item scores during evaluation.
_SCORE_FLOATS = 1 << 24


class RatingTriples(NamedTuple):
  """Observed ratings as parallel (user, item, rating) arrays: one entry per rating."""
  user_idx: np.ndarray  # int32 [R]
  item_idx: np.ndarray  # int32 [R]
  rating: np.ndarray  # float32 [R]


class AlsModel(NamedTuple):
  """Factors whose dot product <x_u, y_i> is the predicted rating (explicit) or preference."""
  user_factors: jax.Array  # [U, d]
  item_factors: jax.Array  # [I, d]
  train_loss: np.ndarray  # [iterations] objective after each sweep (never increases)


def _check_ratings(user_idx, item_idx, ratings, num_users: int, num_items: int) -> RatingTriples:
  """Validates user input and returns it as contiguous int32/float32 numpy arrays."""
  user_idx, item_idx, ratings = (np.asarray(a) for a in (user_idx, item_idx, ratings))
  if not (user_idx.ndim == item_idx.ndim == ratings.ndim == 1
          and user_idx.shape == item_idx.shape == ratings.shape):
    raise EagleError(
        f"ratings: user_idx, item_idx and ratings must be 1-D arrays of one length, got shapes "
        f"{user_idx.shape}, {item_idx.shape}, {ratings.shape}")
  for name, idx, n in (("user_idx", user_idx, num_users), ("item_idx", item_idx, num_items)):
    if not np.issubdtype(idx.dtype, np.integer):
      raise EagleError(f"ratings: {name} must hold integers, got dtype {idx.dtype}")
    if idx.size and (idx.min() < 0 or idx.max() >= n):
      bad = int(np.flatnonzero((idx < 0) | (idx >= n))[0])
      raise EagleError(f"ratings: {name}[{bad}] = {idx[bad]} is outside [0, {n})")
  if not np.all(np.isfinite(ratings)):
    bad = int(np.flatnonzero(~np.isfinite(ratings))[0])
    raise EagleError(f"ratings: rating[{bad}] = {ratings[bad]} is not finite")
  return RatingTriples(user_idx.astype(np.int32), item_idx.astype(np.int32),
                       ratings.astype(np.float32))


def _chunked(ratings: RatingTriples, dim: int) -> tuple[jax.Array, ...]:
  """Pads the ratings to whole chunks and reshapes them [num_chunks, chunk] for `lax.scan`.

  Returns (user_idx, item_idx, rating, valid); padding rows point at index 0 with valid = 0.
  """
  n = len(ratings.rating)
  chunk = max(1, min(n, _CHUNK_FLOATS // (dim * dim)))
  padded = -(-max(n, 1) // chunk) * chunk
  def pad(a):
    return jnp.asarray(np.pad(a, (0, padded - n)).reshape(-1, chunk))
  valid = np.ones(n, np.float32)
  return pad(ratings.user_idx), pad(ratings.item_idx), pad(ratings.rating), pad(valid)


def _weights(rating, valid, implicit: bool, alpha):
  """Per-rating (w, v): A gains w * y y^T and b gains v * y."""
  if implicit:
    return valid * alpha * rating, valid * (1.0 + alpha * rating)
  return valid, valid * rating


@functools.partial(jax.jit, static_argnames=("num_rows", "implicit"))
def _solve_side(fixed, rows, cols, rating, valid, reg, alpha, *, num_rows: int, implicit: bool):
  """One half-sweep: the exact least-squares rows given the other side's `fixed` factors."""
  d = fixed.shape[1]

  def accumulate(carry, chunk):
    a, b = carry
    r, c, rt, ok = chunk
    w, v = _weights(rt, ok, implicit, alpha)
    y = fixed[c]
    a = a + jax.ops.segment_sum(w[:, None, None] * y[:, :, None] * y[:, None, :], r, num_rows)
    b = b + jax.ops.segment_sum(v[:, None] * y, r, num_rows)
    return (a, b), None

  init = (jnp.zeros((num_rows, d, d), fixed.dtype), jnp.zeros((num_rows, d), fixed.dtype))
  (a, b), _ = jax.lax.scan(accumulate, init, (rows, cols, rating, valid))
  gram = fixed.T @ fixed if implicit else jnp.zeros((d, d), fixed.dtype)
  a = a + gram + reg * jnp.eye(d, dtype=fixed.dtype)
  # Rows without ratings have A = G + reg I and b = 0: they solve to the zero vector.
  factor = jax.scipy.linalg.cho_factor(a)
  return jax.scipy.linalg.cho_solve(factor, b[..., None])[..., 0]


@functools.partial(jax.jit, static_argnames=("implicit",))
def _data_term(x, y, users, items, rating, valid, alpha, *, implicit: bool):
  """The objective's data term (without regularisation); explicit: the squared-error sum."""

  def accumulate(total, chunk):
    u, i, r, ok = chunk
    s = jnp.sum(x[u] * y[i], axis=-1)
    if implicit:
      # Observed entries replace the all-zero-preference term s^2 by c (1 - s)^2.
      term = (1.0 + alpha * r) * (1.0 - s) ** 2 - s**2
    else:
      term = (r - s) ** 2
    return total + jnp.sum(ok * term), None

  total, _ = jax.lax.scan(accumulate, jnp.zeros((), x.dtype), (users, items, rating, valid))
  if implicit:
    total = total + jnp.sum((x.T @ x) * (y.T @ y))  # sum over all (u, i) of <x_u, y_i>^2.
  return total


def fit_als(user_idx, item_idx, ratings, num_users: int, num_items: int, *, dim: int,
            reg: float, iterations: int, implicit: bool = False, alpha: float = 10.0,
            seed: int = 0, progress: bool = True) -> AlsModel:
  """Fits user and item factors by alternating exact least-squares solves.

  Users and items without ratings get the zero vector (their right-hand side b is zero).
  Deterministic for a seed.
  """
  if dim < 1 or iterations < 1:
    raise EagleError(
        f"als: dim and iterations must be >= 1, got dim={dim}, iterations={iterations}")
  if reg <= 0:
    raise EagleError(f"als: reg must be > 0 so that every normal equation is solvable, got {reg}")
  data = _check_ratings(user_idx, item_idx, ratings, num_users, num_items)
  if implicit and (alpha <= 0 or data.rating.size and data.rating.min() < 0):
    raise EagleError(
        "als: implicit mode needs alpha > 0 and ratings >= 0 (confidence 1 + alpha * r)")
  users, items, rating, valid = _chunked(data, dim)
  # Solving users first means only the item initialisation matters.
  x = jnp.zeros((num_users, dim), jnp.float32)
  y = 0.1 * jax.random.normal(jax.random.key(seed), (num_items, dim), jnp.float32)
  reg, alpha = jnp.float32(reg), jnp.float32(alpha)
  losses = []
  bar = tqdm.trange(iterations, desc="als", unit="sweep", disable=not progress)
  for _ in bar:
    x = _solve_side(y, users, items, rating, valid, reg, alpha, num_rows=num_users,
                    implicit=implicit)
    y = _solve_side(x, items, users, rating, valid, reg, alpha, num_rows=num_items,
                    implicit=implicit)
    data_term = float(_data_term(x, y, users, items, rating, valid, alpha, implicit=implicit))
    losses.append(data_term + float(reg) * float(jnp.sum(x**2) + jnp.sum(y**2)))
    postfix = {"loss": f"{losses[-1]:.4g}"}
    if not implicit:
      postfix["rmse"] = f"{np.sqrt(data_term / max(len(data.rating), 1)):.4f}"
    bar.set_postfix(postfix)
  return AlsModel(x, y, np.asarray(losses))


def split_ratings(user_idx, item_idx, ratings, test_fraction: float,
                  seed: int) -> tuple[RatingTriples, RatingTriples]:
  """Holds out round(test_fraction * n_u) random ratings of each user, leaving >= 1 in train."""
  if not 0.0 < test_fraction < 1.0:
    raise EagleError(f"split_ratings: test_fraction must be in (0, 1), got {test_fraction}")
  user_idx, item_idx = np.asarray(user_idx), np.asarray(item_idx)
  num_users = int(np.max(user_idx, initial=-1)) + 1
  num_items = int(np.max(item_idx, initial=-1)) + 1
  data = _check_ratings(user_idx, item_idx, ratings, num_users, num_items)
  rng = np.random.default_rng(seed)
  order = np.lexsort((rng.random(len(data.rating)), data.user_idx))  # by user, shuffled within
  counts = np.bincount(data.user_idx, minlength=num_users)
  starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
  rank = np.empty(len(order), np.int64)
  rank[order] = np.arange(len(order)) - starts[data.user_idx[order]]
  num_test = np.minimum(np.floor(test_fraction * counts + 0.5), counts - 1)
  is_test = rank < num_test[data.user_idx]
  pick = lambda m: RatingTriples(*(a[m] for a in data))
  return pick(~is_test), pick(is_test)


@functools.partial(jax.jit, static_argnames=("k",))
def _hits_at_k(user_vecs, item_factors, popularity, seen, relevant, *, k: int):
  """Relevant items among the top k unseen items, for ALS scores and for popularity."""
  def hits(scores):
    _, top = jax.lax.top_k(jnp.where(seen, -jnp.inf, scores), k)
    return jnp.sum(jnp.take_along_axis(relevant, top, axis=1), axis=1)
  return hits(user_vecs @ item_factors.T), hits(jnp.broadcast_to(popularity, seen.shape))


def _csr(ratings: RatingTriples, num_users: int) -> tuple[np.ndarray, np.ndarray]:
  """Items grouped by user and each user's offset into them (CSR rows)."""
  order = np.argsort(ratings.user_idx, kind="stable")
  offsets = np.concatenate([[0], np.cumsum(np.bincount(ratings.user_idx, minlength=num_users))])
  return ratings.item_idx[order], offsets


def _dense_rows(csr: tuple[np.ndarray, np.ndarray], rows: np.ndarray, num_items: int,
                batch: int) -> np.ndarray:
  """A [batch, num_items] mask of the items of each of `rows`; rows past len(rows) are empty."""
  items, offsets = csr
  lengths = offsets[rows + 1] - offsets[rows]
  local = np.repeat(np.arange(len(rows)), lengths)
  # Position of every item of the batch in `items`: its row's start plus its rank in the row.
  pos = np.arange(lengths.sum()) + np.repeat(offsets[rows] - np.cumsum(lengths) + lengths, lengths)
  mask = np.zeros((batch, num_items), bool)
  mask[local, items[pos]] = True
  return mask


def evaluate_als(model: AlsModel, train: RatingTriples, test: RatingTriples, k: int = 10,
                 relevant_rating: float = 4.0, progress: bool = True) -> dict[str, float]:
  """Held-out RMSE and recall@k against a popularity and a global-mean baseline.

  recall@k: for each user with a held-out rating >= `relevant_rating`, the share of those
  items found among the k best-scored items the user did not rate in train; averaged over
  users. Popularity ranks items by their number of train ratings.
  """
  num_users, dim = model.user_factors.shape
  num_items = model.item_factors.shape[0]
  train = _check_ratings(*train, num_users, num_items)
  test = _check_ratings(*test, num_users, num_items)
  if not len(train.rating) or not len(test.rating):
    raise EagleError("evaluate_als: train and test ratings must both be non-empty")
  if not 1 <= k <= num_items:
    raise EagleError(f"evaluate_als: k must be in [1, {num_items}], got {k}")
  test_chunks = _chunked(test, dim)
  sq_err = _data_term(model.user_factors, model.item_factors, *test_chunks, 0.0, implicit=False)
  mean = float(np.mean(train.rating))

  relevant = test.rating >= relevant_rating
  rel_test = RatingTriples(*(a[relevant] for a in test))
  num_relevant = np.bincount(rel_test.user_idx, minlength=num_users)
  eval_users = np.flatnonzero(num_relevant)
  popularity = jnp.asarray(np.bincount(train.item_idx, minlength=num_items), jnp.float32)
  batch = max(1, _SCORE_FLOATS // num_items)
  train_csr, relevant_csr = _csr(train, num_users), _csr(rel_test, num_users)
  recall, pop_recall = [], []
  for start in tqdm.trange(0, len(eval_users), batch, desc="recall@k", unit="batch",
                           disable=not progress, leave=False):
    rows = eval_users[start:start + batch]
    size = batch if len(eval_users) > batch else len(rows)  # Fixed shape: compiles once.
    als_hits, pop_hits = _hits_at_k(
        model.user_factors[np.pad(rows, (0, size - len(rows)))], model.item_factors, popularity,
        _dense_rows(train_csr, rows, num_items, size),
        _dense_rows(relevant_csr, rows, num_items, size), k=k)
    denom = num_relevant[rows]
    recall.append(np.asarray(als_hits)[:len(rows)] / denom)
    pop_recall.append(np.asarray(pop_hits)[:len(rows)] / denom)
  average = lambda parts: float(np.mean(np.concatenate(parts))) if parts else float("nan")
  return {
      "rmse": float(np.sqrt(sq_err / len(test.rating))),
      "global_mean_rmse": float(np.sqrt(np.mean((test.rating - mean) ** 2))),
      f"recall@{k}": average(recall),
      f"popularity_recall@{k}": average(pop_recall),
      "eval_users": int(len(eval_users)),
  }
