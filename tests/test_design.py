"""G-optimal design: Frank–Wolfe vs a float64 NumPy oracle, known optima, rank, masks, vmap,
float32 drift, the paper's rejection sampler and subset selection."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from eagle_jax.design import goptimal as design
from eagle_jax.errors import EagleError


def _lev64(X, w):
  """float64 leverages of all rows of X under weights w (X full column rank on the support)."""
  X = np.asarray(X, np.float64)
  w = np.asarray(w, np.float64)
  return np.sum((X @ np.linalg.inv(X.T @ (w[:, None] * X))) * X, axis=1)


def _gauss(seed, K=40, d=6):
  # Most tests share this shape (and pass a mask) so that they share one compiled solver.
  return np.random.default_rng(seed).normal(size=(K, d)).astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_numpy_oracle(seed):
  X = _gauss(seed)
  w_o, max_o, it_o = design.numpy_oracle_design(X, eps=1e-3)
  d = design.g_optimal_design(X, None, eps=1e-3)
  r = 6
  assert bool(d.converged) and int(d.rank) == r and it_o > 0
  assert max_o <= r * (1 + 1e-3)
  # Both are 1e-3-optimal, so each log det is within r*log(1+eps) of the D-optimum.
  X64 = X.astype(np.float64)
  ld_o = np.linalg.slogdet(X64.T @ (w_o[:, None] * X64))[1]
  ld_j = np.linalg.slogdet(X64.T @ (np.asarray(d.weights, np.float64)[:, None] * X64))[1]
  assert abs(float(d.log_det) - ld_j) < 1e-4
  assert abs(ld_j - ld_o) <= r * np.log1p(1e-3)
  # The optimal V is unique, so the leverage profiles agree.
  np.testing.assert_allclose(np.asarray(d.leverages), _lev64(X, w_o), atol=0.02)
  np.testing.assert_allclose(np.asarray(d.leverages), _lev64(X, d.weights), rtol=1e-4)
  np.testing.assert_allclose(np.asarray(d.weights), w_o, atol=2e-3)


@pytest.mark.parametrize("eps", [0.1, 0.01, 0.001])
def test_kiefer_wolfowitz_certificate(eps):
  X = _gauss(3)
  d = design.g_optimal_design(X, None, eps=eps)
  lev = _lev64(X, d.weights)
  w = np.asarray(d.weights, np.float64)
  assert bool(d.converged)
  # Certificate over all candidates, and KW: max leverage >= r always (sum_a pi_a lev_a = r).
  assert 6 <= lev.max() <= 6 * (1 + eps)  # in float64: the stop rule keeps a rounding margin
  assert lev[w > 0].min() >= 6 * (1 - eps) * (1 - 1e-5)
  np.testing.assert_allclose(w @ lev, 6.0, rtol=1e-5)
  np.testing.assert_allclose(float(d.achieved_eps), lev.max() / 6 - 1, atol=1e-5)
  np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-6)
  assert np.array_equal(np.asarray(d.support), w > 0)


def test_known_optimum_basis_plus_interior():
  # The optimum on {e_1..e_d} + points strictly inside the unit ball is uniform on the basis;
  # an invertible linear map and a shuffle must not change it (G-optimality is affine invariant).
  rng = np.random.default_rng(4)
  d = 6
  interior = rng.normal(size=(34, d))
  interior *= rng.uniform(0.2, 0.9, size=(34, 1)) / np.linalg.norm(interior, axis=1, keepdims=True)
  X = np.concatenate([np.eye(d), interior])
  perm = rng.permutation(len(X))
  A = rng.normal(size=(d, d))
  out = design.g_optimal_design((X @ A)[perm].astype(np.float32), None, eps=1e-3)
  expected = np.concatenate([np.full(d, 1 / d), np.zeros(34)])[perm]
  np.testing.assert_allclose(np.asarray(out.weights), expected, atol=1e-3)
  np.testing.assert_allclose(float(out.max_leverage), d, rtol=1e-3)
  assert bool(out.converged) and int(out.support.sum()) == d


def test_rank_deficient_plane_in_r5():
  rng = np.random.default_rng(5)
  Z = rng.normal(size=(40, 2))
  B = rng.normal(size=(2, 5))
  out = design.g_optimal_design((Z @ B).astype(np.float32), np.ones(40, bool), eps=1e-3)
  w_ref, _, _ = design.numpy_oracle_design(Z, eps=1e-3)  # the same problem in plane coordinates
  assert int(out.rank) == 2 and bool(out.converged)
  assert _lev64(Z, out.weights).max() <= 2 * (1 + 1e-3)
  np.testing.assert_allclose(np.asarray(out.leverages), _lev64(Z, out.weights), rtol=1e-4,
                             atol=1e-5)
  np.testing.assert_allclose(np.asarray(out.leverages), _lev64(Z, w_ref), atol=0.01)
  # log pseudo-det on the plane: det(Z^T diag(pi) Z) * det(B B^T).
  w = np.asarray(out.weights, np.float64)
  expected = np.linalg.slogdet(Z.T @ (w[:, None] * Z))[1] + np.linalg.slogdet(B @ B.T)[1]
  np.testing.assert_allclose(float(out.log_det), expected, atol=1e-3)


def test_masked_padding_is_ignored():
  # Huge garbage rows, shuffled in, give the same design as zero rows at the end.
  rng = np.random.default_rng(6)
  X = _gauss(6, K=30)
  first = np.arange(40) < 30
  garbage = 1e3 * rng.normal(size=(10, 6)).astype(np.float32)
  perm = rng.permutation(40)
  Xp = np.concatenate([X, garbage])[perm]
  mask = first[perm]
  padded = design.g_optimal_design(Xp, mask, eps=1e-3)
  zeros = np.concatenate([X, np.zeros((10, 6), np.float32)])
  plain = design.g_optimal_design(zeros, first, eps=1e-3)
  w = np.asarray(padded.weights)
  assert np.all(w[~mask] == 0) and np.all(np.asarray(padded.leverages)[~mask] == 0)
  np.testing.assert_allclose(w[mask], np.asarray(plain.weights)[perm[mask]], atol=1e-4)
  np.testing.assert_allclose(float(padded.max_leverage), float(plain.max_leverage), rtol=1e-4)
  assert int(padded.rank) == 6 and bool(padded.converged)
  assert _lev64(X, w[np.argsort(perm)][:30]).max() <= 6 * (1 + 1e-3)
  w_o, _, _ = design.numpy_oracle_design(X, eps=1e-3)
  np.testing.assert_allclose(np.asarray(plain.weights)[:30], w_o, atol=2e-3)


def test_vmap_equals_loop():
  X = np.stack([_gauss(s) for s in range(4)])
  mask = np.arange(40)[None, :] < np.array([[40], [35], [20], [7]])
  batched = design.batched_design(X, mask, eps=1e-3)
  for b in range(4):
    single = design.g_optimal_design(X[b], mask[b], eps=1e-3)
    for name in design.Design._fields:
      np.testing.assert_allclose(np.asarray(getattr(batched, name)[b]),
                                 np.asarray(getattr(single, name)), rtol=1e-5, atol=1e-6,
                                 err_msg=name)
  assert np.asarray(batched.converged).all()
  # The unbatched entry point also traces inside a user's own vmap/jit.
  mapped = jax.vmap(lambda x, m: design.g_optimal_design(x, m, eps=1e-3))(X, mask)
  np.testing.assert_allclose(np.asarray(mapped.weights), np.asarray(batched.weights), atol=1e-6)
  assert int(batched.rank[3]) == 6  # 7 valid rows still span R^6


def test_float32_refresh_over_thousands_of_iterations():
  # eps=1e-7 is out of float32's reach: 5000 steps run and converged must say False.
  X = (_gauss(0, K=100, d=32) * np.logspace(0, -2, 32)).astype(np.float32)
  refreshed = design.g_optimal_design(X, None, eps=1e-7, max_iters=5000, refresh_every=50)
  drifting = design.g_optimal_design(X, None, eps=1e-7, max_iters=5000, refresh_every=5000)
  for d in (refreshed, drifting):
    assert int(d.iterations) == 5000 and not bool(d.converged)
    assert np.isfinite(np.asarray(d.weights)).all() and (np.asarray(d.weights) >= 0).all()
  lev_r = _lev64(X, refreshed.weights)
  lev_d = _lev64(X, drifting.weights)
  # The reported certificate is exact (recomputed), and refreshing keeps the steps accurate.
  np.testing.assert_allclose(float(refreshed.max_leverage), lev_r.max(), rtol=1e-6)
  assert lev_r.max() / 32 - 1 < 1e-5
  assert lev_d.max() / 32 - 1 > 10 * (lev_r.max() / 32 - 1)


def test_degenerate_inputs():
  zero = design.g_optimal_design(np.zeros((8, 3), np.float32), np.ones(8, bool))
  assert int(zero.rank) == 0 and not bool(zero.converged) and int(zero.iterations) == 0
  assert np.all(np.asarray(zero.weights) == 0) and np.isinf(float(zero.achieved_eps))
  # Collinear points (r = 1): all mass on the longest, leverage 1.
  t = np.array([0.5, -2.0, 1.0, 1.5, -0.3, 0.1, 1.9, -1.0], np.float32)
  points = t[:, None] * np.array([[1.0, 2.0, -1.0]], np.float32)
  line = design.g_optimal_design(points, np.ones(8, bool))
  assert int(line.rank) == 1 and bool(line.converged)
  np.testing.assert_allclose(np.asarray(line.weights), np.eye(8)[1])
  np.testing.assert_allclose(np.asarray(line.leverages), t**2 / 4, rtol=1e-5)


def test_leverages_function():
  X = _gauss(7)
  w = np.random.default_rng(7).dirichlet(np.ones(40)).astype(np.float32)
  mask = np.arange(40) < 35
  lev = np.asarray(design.leverages(X, mask, w))
  np.testing.assert_allclose(lev[:35], _lev64(X[:35], w[:35]), rtol=1e-4)  # weights as given
  assert np.all(lev[35:] == 0)
  # A design supported on 2 points cannot cover R^6: Definition 1's sup is infinite.
  two = np.zeros(40, np.float32)
  two[:2] = 0.5
  assert np.asarray(design.leverages(X, None, two)).max() > 1e6


def test_rejection_sampler_finds_the_basis():
  # Only the basis subset meets Definition 1 with C = 1 (an interior point in a basis
  # forces a coefficient >= 2 on some e_k): 1 of C(7, 3) = 35 subsets.
  rng = np.random.default_rng(8)
  interior = rng.normal(size=(4, 3))
  interior *= 0.45 / np.abs(interior).max(axis=1, keepdims=True)
  X = np.concatenate([np.eye(3), interior, 100 * np.ones((3, 3))]).astype(np.float32)
  mask = np.arange(10) < 7
  res = design.rejection_design(jax.random.key(0), X, mask, n=3, C=1.0, max_tries=1000)
  assert bool(res.accepted) and int(res.rank) == 3 and 1 <= int(res.tries) < 1000
  assert sorted(np.asarray(res.subset_idx).tolist()) == [0, 1, 2]
  np.testing.assert_allclose(float(res.max_leverage), 3.0, rtol=1e-4)


def test_rejection_sampler_condition_and_failures():
  X = _gauss(9, K=30, d=3)
  mask = np.arange(30) < 25
  res = design.rejection_design(jax.random.key(1), X, mask, n=8, C=3.0)
  idx = np.asarray(res.subset_idx)
  assert bool(res.accepted) and len(set(idx.tolist())) == 8 and mask[idx].all()
  w = np.zeros(30)
  w[idx] = 1 / 8
  assert _lev64(X[mask], w[mask]).max() <= 3.0 * 3 * (1 + 1e-4)
  np.testing.assert_allclose(float(res.max_leverage), _lev64(X[mask], w[mask]).max(), rtol=1e-4)
  # n < r never spans: every try fails, and says so.
  short = design.rejection_design(jax.random.key(2), X, mask, n=2, C=1.0, max_tries=20)
  assert not bool(short.accepted) and int(short.tries) == 20 and float(short.max_leverage) > 1e6
  # More draws than valid rows: infeasible, nothing drawn.
  over = design.rejection_design(jax.random.key(3), X, np.arange(30) < 7, n=8, C=3.0)
  assert not bool(over.accepted) and int(over.tries) == 0


def test_select_subset():
  X = _gauss(10)
  mask = np.arange(40) < 36
  d = design.g_optimal_design(X, mask, eps=1e-3)
  w = np.asarray(d.weights)
  n_supp = int(d.support.sum())
  top = np.asarray(design.select_subset(None, d, 5, "top"))
  np.testing.assert_array_equal(top, np.argsort(-w)[:5])
  # More than the support: all of it, then the valid rows of highest leverage, never padding.
  many = np.asarray(design.select_subset(None, d, n_supp + 4, "top"))
  assert len(set(many.tolist())) == n_supp + 4 and mask[many].all()
  assert set(many[:n_supp].tolist()) == set(np.flatnonzero(w > 0).tolist())
  rest = np.flatnonzero(mask & (w == 0))
  lev = np.asarray(d.leverages)
  assert set(many[n_supp:].tolist()) == set(rest[np.argsort(-lev[rest])[:4]].tolist())
  # Sampling: distinct support rows, and one draw follows pi.
  keys = jax.random.split(jax.random.key(0), 4000)
  draws = np.asarray(jax.vmap(lambda k: design.select_subset(k, d, 4, "sample"))(keys))
  assert all(len(set(row)) == 4 for row in draws.tolist()) and (w[draws] > 0).all()
  first = np.asarray(jax.vmap(lambda k: design.select_subset(k, d, 1, "sample"))(keys))[:, 0]
  np.testing.assert_allclose(np.bincount(first, minlength=40) / 4000, w, atol=0.03)


def test_user_errors():
  X = _gauss(0)
  with pytest.raises(EagleError, match="mask"):
    design.g_optimal_design(X, np.ones(39, bool))
  with pytest.raises(EagleError, match="eps"):
    design.g_optimal_design(X, None, eps=0.0)
  with pytest.raises(EagleError, match=r"\[B, K, d\]"):
    design.batched_design(X, None)
  with pytest.raises(EagleError, match="n must be"):
    design.rejection_design(jax.random.key(0), X, None, n=41)
  d = design.g_optimal_design(X, None)
  with pytest.raises(EagleError, match="how"):
    design.select_subset(None, d, 3, "best")
  with pytest.raises(EagleError, match="full column rank"):
    design.numpy_oracle_design(np.ones((5, 3)))
