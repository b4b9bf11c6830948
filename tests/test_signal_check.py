"""The learner's unit of truth: on the synthetic environment with a planted signal (rho =
0.3 between the predicted-gain feature and the one-step gain), the whole learner, i.e. the
design, the reference SFT and the policy gradient of a real run, must beat random and its
reference on held-out anchors within a fixed number of updates. Real data and the real
encoder; no LLM."""

import numpy as np
import pytest

from eagle_jax.loop import rollout, signal_check
from eagle_jax.world import prepared
from eagle_jax.config import load_config
from eagle_jax.errors import EagleError
from eagle_jax.environment.synthetic import SyntheticEnvironment

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  # The demo's learner as configured (its nets, SFT and RL settings) on fewer movies; the
  # smoke variant's tiny nets and batches are for plumbing, not learning. The synthetic
  # environment moves embeddings, not text: the fields alone need no `describe` run.
  config = load_config("experiments/demo.py", [
      f"workdir={str(tmp_path_factory.mktemp('signal'))!r}", "data.descriptions='movielens'",
      "data.min_ratings_per_movie=40", "actions.num_anchors=320",
      "actions.heldout_fraction=0.5"])
  w = prepared.prepare(config)
  return config, w, signal_check.anchors_table(config, w)


def test_calibration_hits_the_planted_correlation(world):
  config, w, table = world
  for rho in (0.1, 0.3, 1.0):
    env = SyntheticEnvironment.calibrated(w, table, rho, seed=0)
    assert env.stats["rho"] == pytest.approx(rho, abs=0.01), env.stats
  assert SyntheticEnvironment.calibrated(w, table, 1.0).sigma == 0.0  # the feature is the outcome
  with pytest.raises(EagleError, match="synthetic_rho"):
    SyntheticEnvironment.calibrated(w, table, 0.0)


def test_synthetic_steps_are_deterministic_and_follow_the_edit(world):
  config, w, table = world
  env = SyntheticEnvironment.calibrated(w, table, 0.3, seed=0)
  runner = rollout.EpisodeRunner(w, table, env, horizon=2, personalise=False)
  anchors = table.split(heldout=True)[:5]
  a = runner.run(anchors, rollout.random_policy(0), seed=1)
  b = runner.run(anchors, rollout.random_policy(0), seed=2)
  np.testing.assert_array_equal(a.z, b.z)  # same actions: same outcome, whatever the seed
  assert a.texts[0][1].endswith(a.actions[0][0]) and a.degenerate == 0
  # At rho = 1 the outcome is the literal edit the features read: argmax feature = argmax gain.
  exact = rollout.EpisodeRunner(w, table, SyntheticEnvironment.calibrated(w, table, 1.0),
                                horizon=1, personalise=False)
  z_next, utility, _ = exact.one_step_all(anchors, seed=0)
  predicted = exact.observe(0, anchors, [w.text(table.items[x]) for x in anchors],
                            w.text_emb[table.items[anchors]],
                            *exact.state_features(w.text_emb[table.items[anchors]]), 0)
  np.testing.assert_array_equal(
      np.argmax(np.where(table.mask[anchors], utility, -np.inf), -1),
      rollout.predicted_gain_policy()(predicted))


def test_learner_beats_random_and_reference_on_planted_signal(world):
  config, w, table = world
  (row,) = signal_check.check_rho(config, w, table, 0.3, [40])
  eagle, ref = row["eagle_minus_random"], row["eagle_minus_reference"]
  assert eagle["n"] == int(table.heldout.sum())
  # Paired 95% CIs over the held-out anchors exclude zero.
  assert eagle["mean"] - eagle["ci95"] > 0, row
  assert ref["mean"] - ref["ci95"] > 0, row
  assert row["eagle_predicted_gain"] > 1.0, row  # picks what the feature ranks high
  assert row["recovered"] > 0.5, row
  print(signal_check.format_table([row]))
