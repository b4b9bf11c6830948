"""ALS: exact normal equations, planted structure, the split, evaluation, real MovieLens."""

from __future__ import annotations

import pathlib
import time

import numpy as np
import pytest

from eagle_jax.errors import EagleError
from eagle_jax.world import als

SHARED = pathlib.Path(__file__).resolve().parents[1].parent / "shared"
ML_SMALL = SHARED / "data/movielens/ml-latest-small"


def _planted(num_users=80, num_items=60, dim=3, observed=0.5, noise=0.1, seed=0):
  rng = np.random.default_rng(seed)
  x, y = rng.normal(size=(num_users, dim)), rng.normal(size=(num_items, dim))
  users, items = np.nonzero(rng.random((num_users, num_items)) < observed)
  ratings = np.sum(x[users] * y[items], axis=1) + noise * rng.normal(size=len(users))
  return users.astype(np.int32), items.astype(np.int32), ratings.astype(np.float32)


def _rmse(model, data):
  x, y = np.asarray(model.user_factors), np.asarray(model.item_factors)
  return float(np.sqrt(np.mean((np.sum(x[data[0]] * y[data[1]], 1) - data[2]) ** 2)))


def test_explicit_recovers_planted_low_rank():
  train, test = als.split_ratings(*_planted(), test_fraction=0.2, seed=0)
  model = als.fit_als(*train, 80, 60, dim=3, reg=0.1, iterations=25, progress=False)
  assert _rmse(model, train) < 0.11  # noise level 0.1
  assert _rmse(model, test) < 0.15
  assert np.all(np.diff(model.train_loss) <= 1e-5 * model.train_loss[:-1])  # ALS never ascends


@pytest.mark.parametrize("implicit", [False, True])
def test_last_half_sweep_solves_the_normal_equations(implicit):
  """Oracle: item factors are the dense weighted ridge solution given the user factors."""
  users, items, ratings = _planted(num_users=7, num_items=5, dim=2, observed=0.6, seed=1)
  ratings = np.abs(ratings)
  reg, alpha = 0.7, 3.0
  model = als.fit_als(users, items, ratings, 7, 5, dim=2, reg=reg, iterations=2,
                      implicit=implicit, alpha=alpha, progress=False)
  x = np.asarray(model.user_factors, np.float64)
  r = np.zeros((7, 5))
  r[users, items] = ratings
  seen = np.zeros((7, 5), bool)
  seen[users, items] = True
  for i in range(5):
    if implicit:
      conf, target = np.where(seen[:, i], 1 + alpha * r[:, i], 1.0), seen[:, i].astype(float)
    else:
      conf, target = seen[:, i].astype(float), r[:, i]
    a = x.T @ (conf[:, None] * x) + reg * np.eye(2)
    expected = np.linalg.solve(a, x.T @ (conf * target))
    np.testing.assert_allclose(np.asarray(model.item_factors[i]), expected, rtol=1e-4, atol=1e-5)


def test_rows_without_ratings_get_zero_vectors_and_seed_is_deterministic():
  users, items, ratings = _planted(num_users=20, num_items=15)
  fit = lambda seed: als.fit_als(users, items, ratings, 22, 17, dim=3, reg=1.0, iterations=3,
                                 seed=seed, progress=False)
  a, b, c = fit(0), fit(0), fit(1)
  np.testing.assert_array_equal(np.asarray(a.user_factors[20:]), 0.0)
  np.testing.assert_array_equal(np.asarray(a.item_factors[15:]), 0.0)
  np.testing.assert_array_equal(np.asarray(a.user_factors), np.asarray(b.user_factors))
  assert not np.allclose(np.asarray(a.user_factors), np.asarray(c.user_factors))


def test_chunked_accumulation_matches_one_chunk(monkeypatch):
  data = _planted()
  one = als.fit_als(*data, 80, 60, dim=3, reg=1.0, iterations=3, progress=False)
  monkeypatch.setattr(als, "_CHUNK_FLOATS", 9 * 101)  # 101-rating chunks plus padding
  many = als.fit_als(*data, 80, 60, dim=3, reg=1.0, iterations=3, progress=False)
  np.testing.assert_allclose(np.asarray(many.item_factors), np.asarray(one.item_factors),
                             rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(many.train_loss, one.train_loss, rtol=1e-5)


def test_implicit_ranks_planted_positives_above_negatives():
  # Two taste groups; users interact with half of their own group's items only.
  rng = np.random.default_rng(0)
  group_u, group_i = np.repeat([0, 1], 40), np.repeat([0, 1], 30)
  likes = (group_u[:, None] == group_i[None, :]) & (rng.random((80, 60)) < 0.5)
  users, items = np.nonzero(likes)
  ratings = rng.integers(1, 6, size=len(users)).astype(np.float32)
  train, test = als.split_ratings(users, items, ratings, test_fraction=0.3, seed=0)
  model = als.fit_als(*train, 80, 60, dim=4, reg=1.0, iterations=10, implicit=True, alpha=1.0,
                      progress=False)
  scores = np.asarray(model.user_factors @ model.item_factors.T)
  held_out = scores[test.user_idx, test.item_idx]
  other_group = group_i[None, :] != group_u[test.user_idx][:, None]
  negatives = np.where(other_group, scores[test.user_idx], np.nan)
  auc = np.sum(held_out[:, None] > negatives) / np.sum(other_group)
  assert auc > 0.97


def test_split_keeps_one_train_rating_and_partitions():
  users = np.array([0, 0, 0, 0, 0, 1, 2, 2], np.int32)
  items = np.arange(8, dtype=np.int32)
  ratings = np.arange(8, dtype=np.float32)
  train, test = als.split_ratings(users, items, ratings, test_fraction=0.4, seed=3)
  # User 0: round(2.0) = 2 held out; user 1 keeps its only rating; user 2: round(0.8) = 1.
  assert np.bincount(test.user_idx, minlength=3).tolist() == [2, 0, 1]
  assert sorted(np.concatenate([train.item_idx, test.item_idx]).tolist()) == list(range(8))
  np.testing.assert_array_equal(np.concatenate([train.rating, test.rating])[
      np.argsort(np.concatenate([train.item_idx, test.item_idx]))], ratings)
  again, _ = als.split_ratings(users, items, ratings, test_fraction=0.4, seed=3)
  np.testing.assert_array_equal(again.item_idx, train.item_idx)


def test_evaluate_hand_computed():
  # Scores: user 0 -> [4, 3, 1, 0], user 1 -> [0, 1, 3, 4]; user 2 only adds popularity.
  model = als.AlsModel(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32),
                       np.array([[4.0, 0.0], [3.0, 1.0], [1.0, 3.0], [0.0, 4.0]], np.float32),
                       np.zeros(1))
  train = als.RatingTriples(np.array([0, 1, 1, 2, 2]), np.array([0, 3, 0, 1, 3]),
                      np.array([5.0, 4.0, 2.0, 3.0, 3.0], np.float32))
  test = als.RatingTriples(np.array([0, 0, 1, 1]), np.array([1, 3, 2, 1]),
                     np.array([4.0, 5.0, 1.0, 4.5], np.float32))
  # Errors 1, 5, 2, 3.5 -> sqrt(42.25 / 4); global mean 3.4 -> errors .6, 1.6, 2.4, 1.1.
  # Popularity (train counts) = [2, 1, 0, 2]; relevant: user 0 {1, 3}, user 1 {1}.
  # k=1: ALS picks 1 (hit, 1/2) and 2 (miss); popularity picks 3 (hit, 1/2) and 1 (hit, 1/1).
  assert als.evaluate_als(model, train, test, k=1) == pytest.approx({
      "rmse": 3.25, "global_mean_rmse": np.sqrt(9.89 / 4), "recall@1": 0.25,
      "popularity_recall@1": 0.75, "eval_users": 2})
  # k=2: ALS picks {1, 2} (1/2) and {2, 1} (1/1); popularity {3, 1} (2/2) and {1, 2} (1/1).
  result = als.evaluate_als(model, train, test, k=2)
  assert (result["recall@2"], result["popularity_recall@2"]) == pytest.approx((0.75, 1.0))


def test_evaluate_user_batches_match_one_batch(monkeypatch):
  train, test = als.split_ratings(*_planted(), test_fraction=0.3, seed=0)
  test = als.RatingTriples(test.user_idx, test.item_idx, test.rating + 4.0)  # all relevant
  model = als.fit_als(*train, 80, 60, dim=3, reg=1.0, iterations=2, progress=False)
  one = als.evaluate_als(model, train, test, k=5)
  monkeypatch.setattr(als, "_SCORE_FLOATS", 60 * 7)  # 7 users a batch, last one padded
  assert als.evaluate_als(model, train, test, k=5) == pytest.approx(one)
  assert one["eval_users"] == 80


def test_user_errors():
  with pytest.raises(EagleError, match=r"item_idx\[1\] = 9 is outside \[0, 5\)"):
    als.fit_als([0, 1], [0, 9], [1.0, 2.0], 2, 5, dim=2, reg=1.0, iterations=1)
  with pytest.raises(EagleError, match="reg must be > 0"):
    als.fit_als([0], [0], [1.0], 1, 1, dim=2, reg=0.0, iterations=1)
  with pytest.raises(EagleError, match="ratings >= 0"):
    als.fit_als([0], [0], [-1.0], 1, 1, dim=2, reg=1.0, iterations=1, implicit=True)
  with pytest.raises(EagleError, match="test_fraction"):
    als.split_ratings([0], [0], [1.0], test_fraction=1.0, seed=0)


def _load_ml_small():
  if not (ML_SMALL / "ratings.csv").exists():
    pytest.skip(f"{ML_SMALL}/ratings.csv not found (needs the shared MovieLens copy)")
  raw = np.loadtxt(ML_SMALL / "ratings.csv", delimiter=",", skiprows=1, usecols=(0, 1, 2))
  users = np.unique(raw[:, 0], return_inverse=True)[1].astype(np.int32)
  items = np.unique(raw[:, 1], return_inverse=True)[1].astype(np.int32)
  return users, items, raw[:, 2].astype(np.float32)


@pytest.mark.parametrize("settings, min_recall", [
    (dict(dim=8, reg=20.0, iterations=10), 0.105),  # the demo's explicit ALS: 0.113
    (dict(dim=8, reg=1.0, iterations=10, implicit=True, alpha=1.0), 0.15),  # 0.167
])
def test_beats_popularity_on_ml_latest_small(settings, min_recall):
  users, items, ratings = _load_ml_small()
  train, test = als.split_ratings(users, items, ratings, test_fraction=0.2, seed=0)
  start = time.perf_counter()
  model = als.fit_als(*train, users.max() + 1, items.max() + 1, progress=False, **settings)
  result = als.evaluate_als(model, train, test, k=10)
  assert time.perf_counter() - start < 40
  assert result["eval_users"] == 604
  assert result["popularity_recall@10"] == pytest.approx(0.0981, abs=1e-3)
  assert result["recall@10"] > min_recall > result["popularity_recall@10"]
