"""G-optimal design over a state's candidate next-state embeddings (paper §4.3, Definition 1).

A design pi over candidates x_1..x_K is G-optimal when max_a ||x_a||^2_{V(pi)^-1} is minimal,
V(pi) = sum_a pi_a x_a x_a^T. By Kiefer–Wolfowitz the optimum is the D-optimal design
(max log det V) and its max leverage equals r, the dimension of the candidates' span.

Two solvers:
* `g_optimal_design`: Frank–Wolfe / Fedorov–Wynn with exact line search and Wolfe–Atwood
  away steps, rank-one (Sherman–Morrison) updates of V^-1 and of the leverages, refreshed by
  a Cholesky every `refresh_every` steps; jitted, one compile, `batched_design` vmaps it.
* `rejection_design`: the paper's sampler (App. C/E.1): uniform designs on random n-subsets
  until Definition 1 holds with factor C.

Rank handling (shapes stay static): the masked candidate matrix is whitened by its thin SVD,
X = U S W^T, keeping the directions with singular value > tol * max. Candidates become the
rows of U restricted to the kept columns (dropped columns are zeroed), and V(pi) gets unit
variance on the dropped columns so it stays invertible. Leverages are invariant under this
linear map on the span, so the design is exactly the design on span(X) with target r; the
whitened problem starts perfectly conditioned (uniform pi gives V = I/K_valid). Components of
x along directions below tol are treated as numerical noise and ignored.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from eagle_jax.errors import EagleError

Array = jax.Array


class Design(NamedTuple):
  """A design over K (padded) candidates; scalars are 0-d arrays; vmap adds a batch axis."""

  weights: Array  # [K] pi, sums to 1 over valid rows; 0 off the support and on padding.
  support: Array  # [K] bool, weights > 0.
  leverages: Array  # [K] ||x||^2_{V(pi)^-1} on the span, recomputed exactly; 0 on padding.
  mask: Array  # [K] bool, the valid (unpadded) candidates.
  max_leverage: Array  # max of `leverages` over valid rows: the certificate.
  achieved_eps: Array  # max_leverage / rank - 1 (inf when rank is 0).
  rank: Array  # int32 r, the dimension of the candidates' numerical span.
  iterations: Array  # int32 Frank–Wolfe + away steps taken.
  converged: Array  # bool: max leverage <= r(1+eps) and min support leverage >= r(1-eps).
  log_det: Array  # log pseudo-determinant of V(pi) on the span, in the original coordinates.


class RejectionResult(NamedTuple):
  """Outcome of the paper's rejection sampler; `accepted` is False when no try met the condition."""

  subset_idx: Array  # [n] int32 candidate rows (the accepted subset, else the best one seen).
  max_leverage: Array  # max over all valid candidates under the uniform design on the subset.
  tries: Array  # int32 subsets drawn.
  rank: Array  # int32 r, the target of Definition 1 on the span.
  accepted: Array  # bool: max_leverage <= C * r * (1 + rtol).


class _State(NamedTuple):
  weights: Array  # [K]
  h_inv: Array  # [m, m] V^-1 on the kept directions, zero on the dropped ones.
  lev: Array  # [K] leverages, running (rank-one updated) between refreshes.
  log_det: Array  # whitened log det, exact at each refresh.
  it: Array  # int32 steps taken.
  converged: Array  # bool, the stopping rule on exact leverages (set at each refresh).


def _thin_svd(X: Array) -> tuple[Array, Array]:
  """(U, s) of the thin SVD of X [K, d], by the route each backend batches well.

  Off CPU: QR, then the SVD of the small R (whole batched design on an H100, 1024 states x
  100 x 32: 0.93 ms per state with a tall SVD, 0.022 ms with this). On CPU: LAPACK's tall
  SVD directly, which does the same internally; with the QR route the batched CPU design
  deadlocked (all threads idle) in 3 of 8 runs here, with the SVD in none of 20.
  """

  def direct(x):
    u, s, _ = jnp.linalg.svd(x, full_matrices=False)
    return u, s

  def via_qr(x):
    q, r = jnp.linalg.qr(x)
    ur, s, _ = jnp.linalg.svd(r, full_matrices=False)
    return q @ ur, s

  return jax.lax.platform_dependent(X, cpu=direct, default=via_qr)


def _whiten(X: Array, mask: Array, tol: float | None):
  """Returns (Y [K, m], keep [m] bool, r, log_scale): whitened candidates on the kept span.

  log_scale = 2 sum_kept log s converts a whitened log det back to X's coordinates.
  The default tol follows numpy.linalg.matrix_rank: max(K, d) * machine epsilon.
  """
  K, d = X.shape
  u, s = _thin_svd(jnp.where(mask[:, None], X, 0))
  if tol is None:
    tol = max(K, d) * float(jnp.finfo(X.dtype).eps)
  keep = s > tol * s[0]
  Y = u * keep[None, :]
  r = jnp.sum(keep).astype(jnp.int32)
  log_scale = 2 * jnp.sum(jnp.where(keep, jnp.log(jnp.where(keep, s, 1)), 0))
  return Y, keep, r, log_scale


def _tril_inv(L: Array) -> Array:
  """Inverse of a lower-triangular matrix by forward substitution, one row per loop step.

  XLA's CPU triangular solve is ~10x slower than this for batches of small matrices; rows
  >= i of `inv` are still zero at step i, so `L[i] @ inv` sums over k < i only.
  """
  eye = jnp.eye(L.shape[-1], dtype=L.dtype)
  row = lambda i, inv: inv.at[i].set((eye[i] - L[i] @ inv) / L[i, i])
  return jax.lax.fori_loop(0, L.shape[-1], row, jnp.zeros_like(L))


def _exact(Y: Array, keep: Array, weights: Array):
  """Leverages, V^-1 and log det of V(weights) on the kept span, from a fresh Cholesky.

  When V is singular on the span (the support misses a direction, so Definition 1's sup is
  infinite) the Cholesky breaks down: leverages come out +inf (reported for NaN) or of order
  1/machine-epsilon, which no C * r bound accepts.
  """
  pad = jnp.diag(1 - keep.astype(Y.dtype))
  V = (Y * weights[:, None]).T @ Y + pad
  L = jnp.linalg.cholesky(V)
  l_inv = _tril_inv(L)
  Z = l_inv @ Y.T  # [m, K]: ||L^-1 y||^2 = y^T V^-1 y, nonnegative by construction
  lev = jnp.sum(Z * Z, axis=0)
  lev = jnp.where(jnp.isfinite(lev), lev, jnp.inf)
  h_inv = l_inv.T @ l_inv - pad
  log_det = 2 * jnp.sum(jnp.log(jnp.diagonal(L)))
  return lev, h_inv, log_det


def _gaps(lev: Array, weights: Array, mask: Array, r: Array):
  """Frank–Wolfe vertex i (max leverage), away vertex j (min support leverage) and both slacks."""
  rf = r.astype(lev.dtype)
  i = jnp.argmax(jnp.where(mask, lev, -jnp.inf))
  j = jnp.argmin(jnp.where(weights > 0, lev, jnp.inf))
  return i, j, lev[i] / rf - 1, 1 - lev[j] / rf


def _stop(lev, weights, mask, r, eps) -> Array:
  """The two-sided rule. The max side keeps 256 ulps of margin (float32: 3e-5 relative; the
  reported max leverage was within 1e-5 of float64 on 16k benchmark states) so that max
  leverage <= r(1+eps) also holds in exact arithmetic, not just in the working precision.
  """
  _, _, eps_pos, eps_neg = _gaps(lev, weights, mask, r)
  margin = 256 * jnp.finfo(lev.dtype).eps
  return (eps_pos <= (1 + eps) * (1 - margin) - 1) & (eps_neg <= eps)


def _spanner(Y: Array, mask: Array, r: Array) -> Array:
  """Uniform weights on r candidates picked by pivoted Gram–Schmidt (greedy volume).

  A deterministic Kumar–Yildirim-style start: each pick is the candidate farthest from the
  span of the earlier picks, so the start spans the space and is sparse (support r), which
  spares the away steps a uniform start spends emptying its support (measured at d=8,
  K=100: median 53 vs 121 steps; equal at d=32, where optimal supports are large).
  """
  K, m = Y.shape

  def pick(k, carry):
    resid, chosen = carry
    norms = jnp.where(mask & ~chosen, jnp.sum(resid * resid, axis=1), -1.0)
    p = jnp.argmax(norms)
    active = k < r
    q = resid[p] / jnp.sqrt(jnp.maximum(norms[p], jnp.finfo(Y.dtype).tiny))
    resid = jnp.where(active, resid - jnp.outer(resid @ q, q), resid)
    return resid, chosen.at[p].set(chosen[p] | active)

  _, chosen = jax.lax.fori_loop(0, m, pick, (Y, jnp.zeros(K, bool)))
  return chosen.astype(Y.dtype) / jnp.maximum(r, 1).astype(Y.dtype)


def _step(Y: Array, mask: Array, r: Array, s: _State) -> _State:
  """One Fedorov–Wynn step toward the max-leverage vertex, or a Wolfe–Atwood away step.

  Both are V' = a V + b y y^T with (a, b) = (1-gamma, gamma) or (1+t, -t), so one
  Sherman–Morrison update serves both (under vmap a cond would run both branches anyway).
  """
  rf = r.astype(Y.dtype)
  i, j, eps_pos, eps_neg = _gaps(s.lev, s.weights, mask, r)
  toward = eps_pos >= eps_neg
  g_i, g_j, p_j = s.lev[i], s.lev[j], s.weights[j]
  # Exact line searches of log det; gamma < 1 needs r > 1 (at r = 1 the spanner start is optimal).
  gamma = jnp.clip((g_i / rf - 1) / (g_i - 1), 0.0, 1.0 - jnp.finfo(Y.dtype).eps)
  # For g_j <= 1 log det grows without bound in t: only the cap stops the away step.
  t_line = jnp.where(g_j > 1, (1 - g_j / rf) / (g_j - 1), jnp.inf)
  t_cap = p_j / (1 - p_j)  # keeps pi_j >= 0 (inf when p_j = 1)
  t = jnp.minimum(t_line, t_cap)
  k = jnp.where(toward, i, j)
  a = jnp.where(toward, 1 - gamma, 1 + t)
  b = jnp.where(toward, gamma, -t)
  h = s.h_inv @ Y[k]
  coef = b / (a + b * s.lev[k])
  h_inv = (s.h_inv - coef * jnp.outer(h, h)) / a
  lev = (s.lev - coef * jnp.square(Y @ h)) / a
  weights = a * s.weights + b * jax.nn.one_hot(k, Y.shape[0], dtype=Y.dtype)
  drop = ~toward & (t_line >= t_cap)  # a drop step: pi_j leaves the support exactly
  weights = jnp.where(drop & (jnp.arange(Y.shape[0]) == j), 0.0, jnp.maximum(weights, 0.0))
  return s._replace(weights=weights, h_inv=h_inv, lev=lev, it=s.it + 1)


def _refresh(Y, keep, mask, r, eps, weights, it) -> _State:
  """Recomputes V^-1, the leverages and log det from scratch: kills rank-one drift, certifies."""
  weights = weights / jnp.maximum(jnp.sum(weights), jnp.finfo(Y.dtype).tiny)
  lev, h_inv, log_det = _exact(Y, keep, weights)
  converged = (r > 0) & _stop(lev, weights, mask, r, eps)
  return _State(weights, h_inv, lev, log_det, it, converged)


def _full_precision(fn):
  """Traces `fn` with full-precision float32 matmuls: GPUs would otherwise use TF32 (~1e-3
  relative error), too coarse for leverages certified to eps and for rank-one updates."""

  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    with jax.default_matmul_precision("highest"):
      return fn(*args, **kwargs)

  return wrapped


@_full_precision
def _design(X, mask, eps, max_iters, refresh_every, tol) -> Design:
  """Unbatched solver on validated inputs; eps, max_iters, refresh_every may be traced."""
  Y, keep, r, log_scale = _whiten(X, mask, tol)
  state = _refresh(Y, keep, mask, r, eps, _spanner(Y, mask, r), jnp.int32(0))

  def inner_cond(c):
    s, start = c
    in_block = (s.it < max_iters) & (s.it - start < refresh_every)
    return ~_stop(s.lev, s.weights, mask, r, eps) & in_block

  def block(s):
    # Refresh between blocks of steps rather than by a cond inside the step loop: under vmap
    # a cond on a per-state counter becomes a select that would pay the O(K m^2) refresh
    # on every step.
    s, _ = jax.lax.while_loop(inner_cond, lambda c: (_step(Y, mask, r, c[0]), c[1]), (s, s.it))
    return _refresh(Y, keep, mask, r, eps, s.weights, s.it)

  # r > 0 guard: with no span there is nothing to design and no step would make progress.
  state = jax.lax.while_loop(lambda s: ~s.converged & (s.it < max_iters) & (r > 0), block, state)
  max_lev = jnp.max(jnp.where(mask, state.lev, -jnp.inf))
  rf = r.astype(X.dtype)
  return Design(
      weights=state.weights,
      support=state.weights > 0,
      leverages=jnp.where(mask, state.lev, 0.0),
      mask=mask,
      max_leverage=max_lev,
      achieved_eps=jnp.where(r > 0, max_lev / jnp.maximum(rf, 1) - 1, jnp.inf),
      rank=r,
      iterations=state.it,
      converged=state.converged,
      log_det=state.log_det + log_scale,
  )


def _inputs(name: str, X, mask, batch_dims: int):
  """Validates shapes; returns (X as a float array, mask as bool, all-True when None)."""
  X = jnp.asarray(X)
  if X.ndim != batch_dims + 2:
    shape = "[B, K, d]" if batch_dims else "[K, d]"
    raise EagleError(f"{name}: X must have shape {shape}, got {X.shape}")
  if not jnp.issubdtype(X.dtype, jnp.floating):
    X = X.astype(jnp.float32)
  if mask is None:
    return X, jnp.ones(X.shape[:-1], bool)
  mask = jnp.asarray(mask)
  if mask.shape != X.shape[:-1]:
    raise EagleError(
        f"{name}: mask must have shape {list(X.shape[:-1])} to match X {X.shape}, got {mask.shape}")
  return X, mask.astype(bool)


def _solver_args(eps, max_iters, refresh_every):
  if not eps > 0:
    raise EagleError(f"g_optimal_design: eps must be > 0, got {eps}")
  if max_iters < 0 or refresh_every < 1:
    raise EagleError("g_optimal_design: need max_iters >= 0 and refresh_every >= 1, got "
                     f"{max_iters}, {refresh_every}")
  return jnp.float32(eps), jnp.int32(max_iters), jnp.int32(refresh_every)


# eps, max_iters and refresh_every are traced, so sweeping them does not recompile.
_design_jit = jax.jit(_design, static_argnames="tol")


@functools.partial(jax.jit, static_argnames="tol")
def _batched_jit(X, mask, eps, max_iters, refresh_every, tol):
  return jax.vmap(lambda x, m: _design(x, m, eps, max_iters, refresh_every, tol))(X, mask)


def g_optimal_design(
    X: Array,
    mask: Array | None = None,
    *,
    eps: float = 0.01,
    max_iters: int = 10_000,
    refresh_every: int = 50,
    tol: float | None = None,
) -> Design:
  """Approximate G-optimal design over the valid rows of X [K, d] (one state); jitted.

  Stops when max leverage <= r(1+eps) and min support leverage >= r(1-eps), checked on
  exactly recomputed leverages, or after `max_iters` steps with `converged=False`.
  `tol`: relative singular-value cut of the span (default max(K, d) * machine epsilon).
  """
  X, mask = _inputs("g_optimal_design", X, mask, 0)
  return _design_jit(X, mask, *_solver_args(eps, max_iters, refresh_every), tol=tol)


def batched_design(
    X: Array,
    mask: Array | None = None,
    *,
    eps: float = 0.01,
    max_iters: int = 10_000,
    refresh_every: int = 50,
    tol: float | None = None,
) -> Design:
  """`g_optimal_design` vmapped over states: X [B, K, d], mask [B, K] -> batched Design."""
  X, mask = _inputs("batched_design", X, mask, 1)
  return _batched_jit(X, mask, *_solver_args(eps, max_iters, refresh_every), tol=tol)


def leverages(X: Array, mask: Array | None, weights: Array, *, tol: float | None = None) -> Array:
  """||x_a||^2_{V(w)^-1} for every row, on the candidates' span: [K].

  `weights` are used as given (pass a distribution for Definition 1); 0 on padding rows.
  A V(w) singular on the span gives +inf or ~1/machine-epsilon (see `_exact`).
  """
  X, mask = _inputs("leverages", X, mask, 0)
  return _leverages_jit(X, mask, jnp.asarray(weights, X.dtype), tol=tol)


@functools.partial(jax.jit, static_argnames="tol")
@_full_precision
def _leverages_jit(X, mask, weights, tol):
  Y, keep, _, _ = _whiten(X, mask, tol)
  lev, _, _ = _exact(Y, keep, jnp.where(mask, weights, 0.0))
  return jnp.where(mask, lev, 0.0)


@_full_precision
def _rejection(rng, X, mask, C, max_tries, rtol, n, tol) -> RejectionResult:
  Y, keep, r, _ = _whiten(X, mask, tol)
  bound = C * r.astype(Y.dtype) * (1 + rtol)
  feasible = (r > 0) & (jnp.sum(mask) >= n)

  def draw(carry):
    key, tries, best_idx, best_lev, _ = carry
    key, sub = jax.random.split(key)
    gumbel = jax.random.gumbel(sub, mask.shape, Y.dtype)
    _, idx = jax.lax.top_k(jnp.where(mask, gumbel, -jnp.inf), n)  # a uniform n-subset
    weights = jnp.zeros(mask.shape, Y.dtype).at[idx].set(1.0 / n)
    lev, _, _ = _exact(Y, keep, weights)
    max_lev = jnp.max(jnp.where(mask, lev, -jnp.inf))
    better = max_lev < best_lev
    return (key, tries + 1, jnp.where(better, idx, best_idx), jnp.where(better, max_lev, best_lev),
            max_lev <= bound)

  init = (rng, jnp.int32(0), jnp.arange(n, dtype=jnp.int32), jnp.array(jnp.inf, Y.dtype),
          jnp.array(False))
  _, tries, idx, max_lev, accepted = jax.lax.while_loop(
      lambda c: feasible & ~c[4] & (c[1] < max_tries), draw, init)
  return RejectionResult(idx.astype(jnp.int32), max_lev, tries, r, accepted)


_rejection_jit = jax.jit(_rejection, static_argnames=("n", "tol"))


def rejection_design(
    rng: Array,
    X: Array,
    mask: Array | None = None,
    *,
    n: int,
    C: float = 1.0,
    max_tries: int = 1000,
    tol: float | None = None,
    rtol: float = 1e-4,
) -> RejectionResult:
  """The paper's sampler (App. C/E.1): uniform designs on random n-subsets until one is C-optimal.

  Subsets are drawn without replacement; a subset is accepted when
  sup_a ||x_a||^2_{Sigma(q)^-1} <= C * r over ALL valid candidates (Definition 1, with the
  span's dimension r as n = dim Z). `rtol` absorbs rounding: with n = r the subset's own
  leverages equal r exactly. A subset that does not span has an infinite sup (reported as
  inf or ~1/machine-epsilon), so n >= r is needed. With r = 0 or fewer than n valid rows
  nothing is drawn (tries = 0, accepted = False). Jitted; n and tol are static.
  """
  X, mask = _inputs("rejection_design", X, mask, 0)
  if not 1 <= n <= X.shape[0]:
    raise EagleError(f"rejection_design: n must be in [1, K={X.shape[0]}], got {n}")
  if not (C >= 1 and max_tries >= 0 and rtol >= 0):
    raise EagleError("rejection_design: need C >= 1, max_tries >= 0, rtol >= 0, got "
                     f"{C}, {max_tries}, {rtol}")
  return _rejection_jit(rng, X, mask, jnp.float32(C), jnp.int32(max_tries), jnp.float32(rtol),
                        n=n, tol=tol)


def select_subset(rng: Array | None, design: Design, n: int, how: str = "top") -> Array:
  """n distinct candidate rows from a design: [n] int32.

  "top": the n largest weights; "sample": n draws from pi without replacement (Gumbel top-k).
  When the support has fewer than n rows, the rest are the valid rows of highest leverage
  (the directions the design covers worst); padding rows come last, only if K_valid < n.
  """
  if how not in ("top", "sample"):
    raise EagleError(f"select_subset: how must be 'top' or 'sample', got {how!r}")
  K = design.weights.shape[-1]
  if not 1 <= n <= K:
    raise EagleError(f"select_subset: n must be in [1, K={K}], got {n}")
  score = design.weights
  if how == "sample":
    if rng is None:
      raise EagleError("select_subset: how='sample' needs an rng key")
    logw = jnp.log(jnp.where(design.support, design.weights, 1.0))
    score = logw + jax.random.gumbel(rng, design.weights.shape, design.weights.dtype)
  tier = jnp.where(design.support, 2, jnp.where(design.mask, 1, 0))
  score = jnp.where(design.support, score, jnp.where(design.mask, design.leverages, 0.0))
  order = jnp.lexsort((score, tier))  # ascending: tier first, then score
  return order[::-1][:n].astype(jnp.int32)


def numpy_oracle_design(X, eps: float = 0.01, max_iters: int = 100_000):
  """Plain float64 Fedorov–Wynn from the uniform design, inverting V afresh every step.

  The slow, obviously-correct reference for tests and the benchmark: no away steps, no
  rank-one updates, one-sided stop (max leverage <= d(1+eps)). X [K, d] must have full
  column rank (project a rank-deficient set onto its span first). Returns
  (weights [K], max_leverage, iterations).
  """
  X = np.asarray(X, np.float64)
  K, d = X.shape
  if np.linalg.matrix_rank(X) < d:
    raise EagleError(f"numpy_oracle_design: X {X.shape} must have full column rank {d}")
  w = np.full(K, 1.0 / K)
  for it in range(max_iters + 1):
    lev = np.sum((X @ np.linalg.inv(X.T @ (w[:, None] * X))) * X, axis=1)
    i = int(np.argmax(lev))
    if lev[i] <= d * (1 + eps) or it == max_iters:
      break
    gamma = (lev[i] / d - 1) / (lev[i] - 1)
    w *= 1 - gamma
    w[i] += gamma
  return w, float(lev[i]), it
