"""Evaluation statistics on hand-built episodes (no LLM): the chosen actions' predicted gain,
the power of a paired comparison, and the warning when most rewrites were degenerate."""

import json
import math

import numpy as np
import pytest

from eagle_jax.loop import evaluate, rollout


def make_episodes(gains, chosen, masks=None, rejected=None, utility=None) -> rollout.Episodes:
  """Episodes [B, H] whose candidates' last feature is `gains` [B, H, K]; the other feature
  columns hold decoys, so reading the wrong column fails."""
  gains = np.asarray(gains, np.float32)
  B, H, K = gains.shape
  decoys = np.full((B, H, K, 2), 100.0, np.float32)
  masks = np.ones((B, H, K), bool) if masks is None else np.asarray(masks, bool)
  rejected = [[None] * H for _ in range(B)] if rejected is None else rejected
  utility = np.zeros((B, H + 1), np.float32) if utility is None else np.asarray(utility)
  return rollout.Episodes(
      anchors=np.arange(B), users=np.zeros((B, 2), np.float32),
      states=np.zeros((B, H + 1, 4), np.float32),
      candidates=np.concatenate([decoys, gains[..., None]], -1), masks=masks,
      actions=[["a"] * H for _ in range(B)], chosen=np.asarray(chosen, np.int32),
      z=np.zeros((B, H + 1, 2), np.float32), utility=utility, rating=utility,
      distance=np.zeros_like(utility), texts=[["x"] * (H + 1) for _ in range(B)],
      degenerate=sum(r is not None for row in rejected for r in row), rejected=rejected,
      llm_s=0.0)


GAINS = [[[1.0, -1.0, 0.0], [0.5, 2.0, -2.5]],
         [[-1.5, 0.5, 1.0], [3.0, -3.0, 0.0]]]


def test_predicted_gain_averages_the_chosen_candidates_gain():
  ep = make_episodes(GAINS, chosen=[[0, 1], [2, 0]])
  assert evaluate.predicted_gain(ep) == pytest.approx((1.0 + 2.0 + 1.0 + 3.0) / 4)
  ep = make_episodes(GAINS, chosen=[[1, 2], [0, 1]])
  assert evaluate.predicted_gain(ep) == pytest.approx((-1.0 - 2.5 - 1.5 - 3.0) / 4)


def test_predicted_gain_skips_invalid_choices():
  masks = np.ones((2, 2, 3), bool)
  masks[1, 1, 0] = False  # Episode 1 "chose" a padded candidate at step 1.
  ep = make_episodes(GAINS, chosen=[[0, 1], [2, 0]], masks=masks)
  assert evaluate.predicted_gain(ep) == pytest.approx((1.0 + 2.0 + 1.0) / 3)
  assert math.isnan(evaluate.predicted_gain(
      make_episodes(GAINS, chosen=[[0, 1], [2, 0]], masks=np.zeros((2, 2, 3), bool))))


def test_detectable_effect_known_values():
  # z_0.975 + z_0.8 = 1.95996 + 0.84162.
  assert evaluate.detectable_effect(1.0, 1) == pytest.approx(2.80158, abs=1e-4)
  assert evaluate.detectable_effect(0.19, 178) == pytest.approx(0.0399, abs=1e-4)
  assert evaluate.anchors_for_power(0.04, 0.19) == 178
  assert evaluate.anchors_for_power(-0.04, 0.19) == 178  # Either direction.
  assert evaluate.anchors_for_power(0.04, 0.19, power=0.9) > 178
  with pytest.raises(ValueError):
    evaluate.anchors_for_power(0.0, 0.19)


@pytest.mark.parametrize("effect,sd", [(0.04, 0.19), (0.1, 0.3), (0.5, 0.2), (0.01, 1.0)])
def test_anchors_for_power_is_the_smallest_n_that_detects_the_effect(effect, sd):
  n = evaluate.anchors_for_power(effect, sd)
  assert evaluate.detectable_effect(sd, n) <= effect + 1e-12
  if n > 1:
    assert evaluate.detectable_effect(sd, n - 1) > effect


def test_power_is_monotonic():
  ns = [2, 10, 50, 200]
  effects = [evaluate.detectable_effect(0.2, n) for n in ns]
  assert effects == sorted(effects, reverse=True)  # More anchors: smaller detectable effect.
  assert evaluate.detectable_effect(0.3, 50) > evaluate.detectable_effect(0.2, 50)
  assert evaluate.detectable_effect(0.2, 50, power=0.9) > evaluate.detectable_effect(0.2, 50)
  needed = [evaluate.anchors_for_power(e, 0.2) for e in (0.2, 0.1, 0.05, 0.01)]
  assert needed == sorted(needed) and len(set(needed)) == 4


def test_mean_ci_and_paired_difference():
  ci = evaluate.mean_ci([1.0, 2.0, 3.0])
  assert ci == pytest.approx({"mean": 2.0, "ci95": 1.96 / math.sqrt(3), "n": 3, "sd": 1.0})
  d = evaluate.paired_difference([1.0, 2.0, 3.0])
  assert set(d) == {"mean", "ci95", "n", "sd", "detectable_80"}
  assert d["detectable_80"] == pytest.approx(evaluate.detectable_effect(1.0, 3))
  single = evaluate.paired_difference([0.5])
  assert single["n"] == 1 and math.isnan(single["sd"]) and math.isnan(single["detectable_80"])


def rejected_steps(*reasons):
  """[2][3] rejection reasons, row-major, padded with None."""
  flat = list(reasons) + [None] * (6 - len(reasons))
  return [flat[:3], flat[3:]]


def test_degenerate_warning_needs_more_than_half_rejected():
  gains = np.zeros((2, 3, 2))
  chosen = np.zeros((2, 3))
  assert evaluate.degenerate_warning("eagle", make_episodes(gains, chosen)) is None
  half = make_episodes(gains, chosen, rejected=rejected_steps("echo", "echo", "empty"))
  assert evaluate.degenerate_warning("eagle", half) is None
  most = make_episodes(gains, chosen, rejected=rejected_steps("empty", "echo", "echo", "echo"))
  assert evaluate.rejected_by_reason(most) == {"echo": 3, "empty": 1}
  message = evaluate.degenerate_warning("eagle", most)
  assert message.startswith("4 of 6 eagle rewrites were rejected as degenerate (echo 3, empty 1)")
  assert "tie" not in message
  every = make_episodes(gains, chosen, rejected=rejected_steps(*["echo"] * 5, "empty"))
  message = evaluate.degenerate_warning("random", every)
  assert message.startswith("6 of 6 random rewrites were rejected as degenerate (echo 5, empty 1)")
  assert "tie" in message


def test_degenerate_warning_counts_over_several_runs():
  gains, chosen = np.zeros((2, 3, 2)), np.zeros((2, 3))
  all_rejected = make_episodes(gains, chosen, rejected=rejected_steps(*["echo"] * 6))
  clean = make_episodes(gains, chosen)
  assert evaluate.degenerate_warning("best_of_2", all_rejected, clean) is None  # 6 of 12.
  assert "12 of 12" in evaluate.degenerate_warning("best_of_2", all_rejected, all_rejected)
  assert evaluate.rejected_by_reason(all_rejected, all_rejected) == {"echo": 12}


class FakeRunner:
  """Hands out prepared Episodes in call order (eagle, reference, random, best-of tries)."""

  def __init__(self, runs):
    self.runs = list(runs)

  def run(self, anchors, choose, seed):
    return self.runs.pop(0)


def test_compare_policies_summaries_and_warnings(capsys):
  gains, chosen = np.asarray(GAINS), [[0, 1], [2, 0]]
  u = lambda end: np.array([[0.0, 0.0, end[0]], [0.0, 0.0, end[1]]])  # noqa: E731
  echo = [["echo", "echo"], ["echo", "empty"]]
  runs = [make_episodes(gains, chosen, rejected=echo, utility=u([0.3, 0.5])),  # eagle
          make_episodes(gains, [[1, 2], [0, 1]], utility=u([0.2, 0.1])),  # reference
          make_episodes(gains, chosen, utility=u([0.1, 0.2])),  # random
          make_episodes(gains, chosen, utility=u([0.0, 0.4])),  # best-of-2 tries
          make_episodes(gains, chosen, rejected=echo, utility=u([0.2, 0.1]))]
  results, episodes = evaluate.compare_policies(
      FakeRunner(runs), None, None, None, np.arange(2), episodes_per_pair=1, best_of_n=2,
      seed=0, greedy_baseline=False, predicted_baseline=False)
  assert set(results) == {"eagle", "reference", "random", "best_of_2", "warnings"}
  assert results["eagle"]["predicted_gain"] == pytest.approx(1.75)
  assert results["reference"]["predicted_gain"] == pytest.approx(-2.0)
  assert "predicted_gain" not in results["best_of_2"]
  assert results["eagle"]["rejected_by_reason"] == {"echo": 3, "empty": 1}
  assert results["reference"]["rejected_by_reason"] == {}
  assert results["best_of_2"]["rejected_by_reason"] == {"echo": 3, "empty": 1}
  diff = results["eagle"]["minus_random"]
  assert diff["mean"] == pytest.approx(0.25) and diff["sd"] == pytest.approx(0.0707107)
  assert diff["detectable_80"] == pytest.approx(evaluate.detectable_effect(diff["sd"], 2))
  assert results["best_of_2"]["minus_random"]["mean"] == pytest.approx(0.15)
  assert "detectable_80" in results["eagle"]["minus_reference"]
  assert results["warnings"] == [
      "4 of 4 eagle rewrites were rejected as degenerate (echo 3, empty 1): every episode "
      "ends at its x_0, so all policies see the same text and tie"]  # best-of-2: 4 of 8.
  assert f"warning: {results['warnings'][0]}" in capsys.readouterr().out
  assert episodes["eagle"] is not None and "best_of_2" not in episodes
  json.loads(json.dumps(results))  # eval.json must serialise
