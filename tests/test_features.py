"""Network inputs (`eagle_jax.environment.features`) and the design's anchor subset, on tiny
dummies."""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eagle_jax.environment import features
from eagle_jax.actions.anchors import AnchorTable
from eagle_jax.world import utility as utility_lib

D_EMB, D, K = 6, 3, 4


@pytest.fixture
def domain():
  rng = np.random.default_rng(0)
  head = rng.normal(size=(D_EMB, D)).astype(np.float32)
  catalogue = rng.normal(size=(10, D)).astype(np.float32)
  prepared = types.SimpleNamespace(latent_of_embedding=lambda e: np.asarray(e) @ head)

  @jax.jit
  def utility(z, users, anchors):
    return jax.vmap(lambda z_, u_, a_: utility_lib.utility(
        z_, u_, jnp.asarray(catalogue), lam=0.1, k=3, exclude_index=a_))(z, users, anchors)
  return prepared, utility, rng


def test_candidate_features_read_the_literal_edit(domain):
  prepared, utility, rng = domain
  emb = rng.normal(size=(2, D_EMB)).astype(np.float32)
  emb /= np.linalg.norm(emb, axis=-1, keepdims=True)
  z = prepared.latent_of_embedding(emb)
  users = rng.normal(size=(2, D)).astype(np.float32)
  anchors = np.array([1, 7])
  actions = rng.normal(size=(2, K, D_EMB)).astype(np.float32)
  mask = np.array([[True, True, True, False], [True, True, True, True]])
  got = features.candidate_features(prepared, utility, emb, z, users, anchors, actions, mask)
  assert got.shape == (2, K, D_EMB + 2 * D + 1) and got.dtype == np.float32
  assert not got[0, 3].any()  # A masked candidate carries nothing.
  b, k = 1, 2  # One candidate, recomputed by hand.
  mixed = emb[b] + actions[b, k]
  z_hat = prepared.latent_of_embedding(mixed / np.linalg.norm(mixed))
  u_hat = utility(z_hat[None], users[b:b + 1], anchors[b:b + 1])[0][0]
  u_now = utility(z[b:b + 1], users[b:b + 1], anchors[b:b + 1])[0][0]
  np.testing.assert_allclose(got[b, k, :D_EMB], actions[b, k])
  gains, shifts = [], []  # The gain is z-scored over the state's candidates.
  for j in range(K):
    mixed = emb[b] + actions[b, j]
    zj = prepared.latent_of_embedding(mixed / np.linalg.norm(mixed))
    gains.append(float(utility(zj[None], users[b:b + 1], anchors[b:b + 1])[0][0] - u_now))
    shifts.append(zj - z[b])
  gains, shifts = np.array(gains), np.array(shifts)
  # Each latent block is divided by its RMS norm over the state's candidates.
  rms = lambda x: np.sqrt(np.mean(np.sum(x ** 2, -1)))  # noqa: E731
  np.testing.assert_allclose(got[b, k, D_EMB:D_EMB + D], (z_hat - z[b]) / rms(shifts),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(got[b, k, D_EMB + D:-1],
                             users[b] * (z_hat - z[b]) / rms(users[b] * shifts), rtol=1e-5,
                             atol=1e-6)
  assert gains[k] == pytest.approx(float(u_hat - u_now), abs=1e-6)
  np.testing.assert_allclose(got[b, :, -1], (gains - gains.mean()) / gains.std(), rtol=1e-4,
                             atol=1e-5)
  assert got[0, :3, -1].mean() == pytest.approx(0, abs=1e-6)  # Masked entries excluded.
  assert got[0, :3, -1].std() == pytest.approx(1, abs=1e-5)


def test_standardise_handles_constant_rows():
  x = np.array([[1.0, 1.0, 5.0], [2.0, 4.0, 6.0]])
  mask = np.array([[True, True, False], [True, True, True]])
  got = features.standardise(x, mask)
  np.testing.assert_array_equal(got[0], 0.0)
  np.testing.assert_allclose(got[1], [-1.2247449, 0.0, 1.2247449], rtol=1e-6)


def _table(num: int, heldout: int) -> AnchorTable:
  flags = np.zeros(num, bool)
  flags[num - heldout:] = True
  return AnchorTable(items=np.arange(num), user_ids=np.arange(num), heldout=flags,
                        actions=[["a"]] * num, action_emb=np.zeros((num, 1, 2), np.float32),
                        mask=np.ones((num, 1), bool), profiles=[""] * num)


def test_design_rows_keep_the_train_heldout_proportion():
  table = _table(40, 10)
  rows = table.design_rows(8)
  assert rows.tolist() == [0, 1, 2, 3, 4, 5, 30, 31]  # 6 training + 2 held-out anchors.
  assert table.design_rows(0).tolist() == list(range(40))
  assert table.design_rows(100).tolist() == list(range(40))


def test_steerability_of_a_perfect_and_a_reversed_predictor():
  actual = np.array([[1.0, 2.0, 4.0, 9.0], [0.0, 3.0, 0.0, 0.0]])
  mask = np.array([[True, True, True, False], [True, True, True, True]])
  perfect = features.steerability(actual, actual, mask)
  assert perfect["oracle_gain"] == pytest.approx(((4 - 7 / 3) + (3 - 0.75)) / 2)
  assert perfect["predicted_gain"] == pytest.approx(perfect["oracle_gain"])
  assert perfect["correlation"] == pytest.approx(1.0)
  reversed_ = features.steerability(-actual, actual, mask)
  assert reversed_["predicted_gain"] == pytest.approx(((1 - 7 / 3) + (0 - 0.75)) / 2)
  assert reversed_["correlation"] == pytest.approx(-1.0)
  # An anchor whose rewrites were all rejected: equal utilities up to float32 rounding.
  rejected = np.float32(2.5) + np.float32([0, 2.4e-7, 0, -2.4e-7])
  both = features.steerability(np.stack([actual[1], actual[1]]),
                               np.stack([actual[1], rejected]), mask[[1, 1]])
  assert both["correlation"] == pytest.approx(1.0)  # The rejected anchor does not count.


def _movies(num_movies, anchors_per_movie, num_candidates, dim, rng):
  """Candidate features [A, K, F], a validity mask and each anchor's movie, A = movies x
  anchors per movie; anchors of one movie share their features (as they share their text)."""
  per_movie = rng.normal(size=(num_movies, num_candidates, dim))
  groups = np.repeat(np.arange(num_movies), anchors_per_movie)
  mask = np.ones((len(groups), num_candidates), bool)
  mask[0, -1] = False  # A ragged anchor.
  return per_movie[groups], mask, groups


def test_fitted_predictor_recovers_a_planted_linear_signal_on_unseen_movies():
  rng = np.random.default_rng(0)
  X, mask, groups = _movies(40, 1, 12, 20, rng)
  actual = X @ rng.normal(size=20) + 0.3 * rng.normal(size=mask.shape)
  got = features.fitted_predictor_gain(X, actual, mask, groups)
  oracle = features.steerability(actual, actual, mask)["oracle_gain"]
  assert got["fitted_gain"] > 0.8 * oracle
  assert got["fitted_correlation"] > 0.9


def test_fitted_predictor_does_not_score_memorised_movies():
  # Each movie has its own arbitrary utilities, repeated across its 3 anchors: nothing
  # transfers to another movie, so the held-out-by-movie gain must be about 0 (a
  # per-anchor split finds each anchor's twins in training: 0.28 of the oracle here).
  rng = np.random.default_rng(1)
  X, mask, groups = _movies(40, 3, 12, 60, rng)
  per_movie = rng.normal(size=(40, 12))
  actual = per_movie[groups]
  got = features.fitted_predictor_gain(X, actual, mask, groups)
  oracle = features.steerability(actual, actual, mask)["oracle_gain"]
  assert abs(got["fitted_gain"]) < 0.2 * oracle


def test_fitted_predictor_needs_two_movies():
  X, mask, groups = _movies(1, 4, 5, 3, np.random.default_rng(2))
  got = features.fitted_predictor_gain(X, np.ones(mask.shape), mask, groups)
  assert np.isnan(got["fitted_gain"])


def test_action_identification_counts_nearest_action_texts():
  actions = np.eye(3, 4)[None]  # Three orthogonal action embeddings of one anchor.
  mask = np.ones((1, 3), bool)
  rewrites = np.array([[[0.9, 0.1, 0, 0], [0, 1, 0.2, 0], [1, 0, 0.1, 0]]])  # last: wrong
  got = features.action_identification(rewrites, actions, mask)
  assert got == pytest.approx({"identification": 2 / 3, "chance": 1 / 3})
  mask = np.array([[True, True, False]])  # A padded candidate is neither target nor rival.
  got = features.action_identification(rewrites, actions, mask)
  assert got == pytest.approx({"identification": 1.0, "chance": 0.5})


def test_paraphrase_stability_compares_medians_of_moves():
  z0 = np.zeros((3, 2), np.float32)
  z_para = np.array([[0.1, 0.0], [0.0, 0.3], [5.0, 0.0]], np.float32)
  usable = np.array([True, True, False])  # The rejected one did not move: not counted.
  z_next = np.zeros((3, 2, 2), np.float32)
  z_next[:, 0, 0], z_next[:, 1, 1] = 1.0, 2.0
  z_next[2, 1] = 0.0  # Rejected: kept x_0, not counted as an edit that did not move.
  edited = np.array([[True, True], [True, True], [True, False]])
  stats = features.paraphrase_stability(z0, z_para, usable, z_next, edited)
  assert stats["paraphrases_usable"] == 2 and stats["edits_usable"] == 5
  assert stats["paraphrase_move"] == pytest.approx(0.2)
  assert stats["edit_move"] == pytest.approx(1.0)  # median of 1, 2, 1, 2, 1
  assert stats["paraphrase_edit_ratio"] == pytest.approx(0.2)
  none = features.paraphrase_stability(z0, z_para, np.zeros(3, bool), z_next,
                                       np.zeros((3, 2), bool))
  assert np.isnan(none["paraphrase_move"]) and np.isnan(none["paraphrase_edit_ratio"])
