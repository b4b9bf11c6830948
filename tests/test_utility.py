"""Content-gap utility: hand-computed values on a 2-D toy catalogue, cap, exclusion, vmap."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eagle_jax.errors import EagleError
from eagle_jax.world.utility import batched_utility, utility

# Distances from z = (1, 0): c0 1, c1 2, c2 sqrt(17), c3 sqrt(20), c4 sqrt(181).
CATALOGUE = jnp.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0], [3.0, 4.0], [10.0, 10.0]])
Z = jnp.array([1.0, 0.0])
USER = jnp.array([2.0, -1.0])  # <user, z> = 2.
SQRT17, SQRT20 = 4.1231056256, 4.4721359550


def _check(out, total, rating, distance):
  np.testing.assert_allclose(np.array(out), [total, rating, distance], rtol=1e-5)


def test_hand_computed_three_nearest():
  # 3-NN = c0, c1, c2: 0.5 * (1 + 2 + sqrt 17) = 3.5615528.
  _check(utility(Z, USER, CATALOGUE, lam=0.5), 5.5615528, 2.0, 3.5615528)


def test_k_and_lambda():
  _check(utility(Z, USER, CATALOGUE, lam=0.5, k=1), 2.5, 2.0, 0.5)
  _check(utility(Z, USER, CATALOGUE, lam=0.0), 2.0, 2.0, 0.0)


def test_exclusion_skips_the_anchor():
  # Without c0, 3-NN = c1, c2, c3: 0.5 * (2 + sqrt 17 + sqrt 20) = 5.2976208.
  _check(utility(Z, USER, CATALOGUE, lam=0.5, exclude_index=0), 7.2976208, 2.0, 5.2976208)
  # An excluded item that is not among the neighbours changes nothing.
  _check(utility(Z, USER, CATALOGUE, lam=0.5, exclude_index=4), 5.5615528, 2.0, 3.5615528)
  # k = M with exclusion: the sum runs over the M - 1 remaining items, 1 + 2 + sqrt17 + sqrt20.
  total = 1 + 2 + SQRT17 + SQRT20
  _check(utility(Z, USER, CATALOGUE, lam=1.0, k=5, exclude_index=4), 2 + total, 2.0, total)


def test_cap_clips_only_the_bonus():
  _check(utility(Z, USER, CATALOGUE, lam=0.5, cap=3.0), 5.0, 2.0, 3.0)
  _check(utility(Z, USER, CATALOGUE, lam=0.5, cap=10.0), 5.5615528, 2.0, 3.5615528)


def test_gradient_is_finite_on_a_catalogue_item():
  # z on c0 (distance 0): grad = user + (z - c1)/3 + (z - c2)/4 = (2, -1) + (-1, 0) + (0, -1).
  grad = jax.grad(lambda z: utility(z, USER, CATALOGUE, lam=1.0)[0])(CATALOGUE[0])
  np.testing.assert_allclose(np.array(grad), [2.0 - 1.0, -1.0 - 1.0], rtol=1e-6)


def test_jit_vmap_match_loop_and_brute_force():
  rng = np.random.default_rng(0)
  catalogue = rng.normal(size=(50, 4)).astype(np.float32)
  z = rng.normal(size=(16, 4)).astype(np.float32)
  users = rng.normal(size=(16, 4)).astype(np.float32)
  exclude = rng.integers(-1, 50, size=16).astype(np.int32)
  batched = jax.jit(lambda z, u, e: batched_utility(z, u, catalogue, lam=0.3, k=3, cap=1.5,
                                                    exclude_index=e))(z, users, exclude)
  for b in range(16):
    looped = utility(z[b], users[b], catalogue, lam=0.3, k=3, cap=1.5, exclude_index=exclude[b])
    dist = np.linalg.norm(catalogue - z[b], axis=1)
    if exclude[b] >= 0:
      dist[exclude[b]] = np.inf
    bonus = min(0.3 * np.sort(dist)[:3].sum(), 1.5)
    oracle = [users[b] @ z[b] + bonus, users[b] @ z[b], bonus]
    np.testing.assert_allclose([float(x[b]) for x in batched], oracle, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose([float(x) for x in looped], oracle, rtol=1e-5, atol=1e-5)


def test_shared_user_and_no_exclusion():
  z = jnp.stack([Z, Z + 1.0])
  total, rating, _ = batched_utility(z, USER, CATALOGUE, lam=0.5)
  np.testing.assert_allclose(np.array(rating), [2.0, 3.0])  # z1 = (2, 1).
  np.testing.assert_allclose(float(total[0]), 5.5615528, rtol=1e-5)


def test_k_larger_than_catalogue_is_a_user_error():
  with pytest.raises(EagleError, match="k must be in"):
    utility(Z, USER, CATALOGUE, lam=0.5, k=6)
