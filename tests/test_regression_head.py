"""Tests of E_D's regression head on planted maps, against ridge and hand-computed metrics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eagle_jax.run import artifacts
from eagle_jax.errors import EagleError
from eagle_jax.world import regression_head as rh


def _split(x, z, n_train):
  return (x[:n_train], z[:n_train]), (x[n_train:], z[n_train:])


def _unit_rows(rng, n, d):
  x = rng.normal(size=(n, d))
  return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_linear_head_is_ridge_and_recovers_planted_map():
  rng = np.random.default_rng(0)
  x = _unit_rows(rng, 500, 24)
  w, b = rng.normal(size=(24, 3)), np.array([5.0, -2.0, 0.5])
  z = (x @ w + b + 0.01 * rng.normal(size=(500, 3))).astype(np.float32)
  (xt, zt), (xv, zv) = _split(x, z, 400)
  lam = 0.5
  params, hist = rh.fit_head(xt, zt, hidden=0, lr=3e-2, steps=1500, weight_decay=lam,
                             progress=False)
  assert hist["loss"].shape == (1500,) and hist["loss"][-1] < 0.1 * hist["loss"][0]
  # Oracle: closed-form ridge with the same lam on the kernel, bias unpenalised.
  xb = np.c_[xt, np.ones(len(xt))]
  reg = lam * np.eye(25)
  reg[-1, -1] = 0
  coef = np.linalg.solve(xb.T @ xb + reg, xb.T @ zt)
  ridge_pred = np.c_[xv, np.ones(len(xv))] @ coef
  np.testing.assert_allclose(rh.apply_head(params, xv), ridge_pred, atol=2e-3)
  m = rh.evaluate_head(params, xv, zv)
  assert m["r2"] > 0.98 and m["cosine"] > 0.99


def test_mlp_head_fits_planted_nonlinear_map_better_than_linear():
  rng = np.random.default_rng(1)
  x = _unit_rows(rng, 1500, 8)
  a = rng.normal(size=(8, 4)) * 3
  z = np.tanh(x @ a).astype(np.float32) ** 2  # Even in x: no linear signal at all.
  (xt, zt), (xv, zv) = _split(x, z, 1200)
  kw = dict(lr=1e-2, steps=1500, weight_decay=1e-3, hidden_weight_decay=1e-3, progress=False)
  mlp, _ = rh.fit_head(xt, zt, hidden=64, **kw)
  linear, _ = rh.fit_head(xt, zt, hidden=0, **kw)
  assert rh.evaluate_head(mlp, xv, zv)["r2"] > 0.9
  assert rh.evaluate_head(linear, xv, zv)["r2"] < 0.1


def test_evaluate_head_hand_computed():
  # A zero network outputs z_mean * 1: predictions are [2, 1] for every row.
  params = rh.init_head(jax.random.key(0), 3, 2, hidden=0)
  params["net"] = jax.tree.map(jnp.zeros_like, params["net"])
  params["z_mean"] = jnp.array([2.0, 1.0])
  emb = np.zeros((2, 3), np.float32)
  z = np.array([[1.0, 0.0], [3.0, 2.0]])  # Column means [2, 1]: the prediction.
  m = rh.evaluate_head(params, emb, z)
  assert m["r2"] == pytest.approx(0.0, abs=1e-7)
  assert m["mse"] == pytest.approx(1.0)
  cos = (2 / np.sqrt(5) + 8 / np.sqrt(5 * 13)) / 2
  assert m["cosine"] == pytest.approx(cos, rel=1e-6)
  # Worse than the mean of the truth: SSE 8 against SST 4.
  m = rh.evaluate_head(params, emb, np.array([[2.0, 3.0], [4.0, 1.0]]))
  assert m["r2"] == pytest.approx(-1.0) and m["mse"] == pytest.approx(2.0)


def test_apply_head_unbatched_batched_and_jitted():
  params = rh.init_head(jax.random.key(3), 6, 4, hidden=16)
  params["z_mean"] = jnp.arange(4.0)
  params["z_scale"] = jnp.array(2.5)
  emb = jax.random.normal(jax.random.key(4), (5, 6))
  batched = rh.apply_head(params, emb)
  assert batched.shape == (5, 4)
  np.testing.assert_allclose(rh.apply_head(params, emb[2]), batched[2], rtol=1e-6)
  np.testing.assert_allclose(jax.jit(rh.apply_head)(params, emb), batched, rtol=1e-6)
  # The stored statistics map standardised outputs back to latent units.
  raw = rh._module(params).apply({"params": params["net"]}, emb)
  np.testing.assert_allclose(batched, raw * 2.5 + jnp.arange(4.0), rtol=1e-6)


@pytest.mark.parametrize("hidden", [0, 8])
def test_save_load_roundtrip(tmp_path, hidden):
  rng = np.random.default_rng(2)
  x, z = _unit_rows(rng, 50, 5), rng.normal(size=(50, 3)).astype(np.float32)
  params, _ = rh.fit_head(x, z, hidden=hidden, steps=20, progress=False)
  rh.save_head(tmp_path / "head.npz", params)
  loaded = rh.load_head(tmp_path / "head.npz")
  assert jax.tree.structure(loaded) == jax.tree.structure(params)
  np.testing.assert_array_equal(rh.apply_head(loaded, x), rh.apply_head(params, x))


def test_load_head_errors(tmp_path):
  with pytest.raises(EagleError, match="missing.npz"):
    rh.load_head(tmp_path / "missing.npz")
  artifacts.write_npz(tmp_path / "other.npz", weights=np.zeros(3))
  with pytest.raises(EagleError, match="not a regression head"):
    rh.load_head(tmp_path / "other.npz")
