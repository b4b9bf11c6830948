"""Policy comparison on held-out (movie, user) anchors, with 95% confidence intervals.

All policies run the same anchors with the same environment seeds (common random numbers):
EAGLE (the trained policy, argmax), the reference policy alone (argmax), random actions,
the candidate E_D's reading of the edit predicts best (`predicted_best`), greedy one-step
look-ahead in the real environment (K rewrites per decision), and
best-of-N random episodes (picked by the true utility: N times the LLM calls).

Besides U(x_H), the results say whether the comparison could show an effect at all: the
power of each paired difference (`detectable_80`), the noise-free `predicted_gain` of the
actions a policy chose, and warnings when most rewrites were rejected as degenerate (then
every policy keeps x_0 and they tie whatever they chose).
"""

from __future__ import annotations

import collections
import math
from statistics import NormalDist

import numpy as np

from eagle_jax.loop import rollout


def mean_ci(x) -> dict:
  """Mean, 95% CI half-width, n and standard deviation (ddof 1) of a sample."""
  x = np.asarray(x, np.float64)
  if len(x) < 2:  # No spread to estimate.
    return {"mean": float(x.mean()), "ci95": float("nan"), "n": int(len(x)), "sd": float("nan")}
  sd = float(x.std(ddof=1))
  return {"mean": float(x.mean()), "ci95": 1.96 * sd / math.sqrt(len(x)), "n": int(len(x)),
          "sd": sd}


def paired_difference(x) -> dict:
  """`mean_ci` of paired differences, plus the effect this n and sd detect at 80% power."""
  ci = mean_ci(x)
  return {**ci, "detectable_80": detectable_effect(ci["sd"], ci["n"])}


def _z_sum(power: float, alpha: float) -> float:
  """z_{1-alpha/2} + z_{power}: a two-sided test at level alpha with the given power."""
  z = NormalDist().inv_cdf
  return z(1 - alpha / 2) + z(power)


def detectable_effect(sd: float, n: int, power: float = 0.8, alpha: float = 0.05) -> float:
  """Smallest true mean difference a two-sided paired test (normal approximation) detects
  with probability `power` from n pairs whose differences have standard deviation sd."""
  return _z_sum(power, alpha) * sd / math.sqrt(n)


def anchors_for_power(effect: float, sd: float, power: float = 0.8,
                      alpha: float = 0.05) -> int:
  """Pairs needed to detect a true mean difference `effect` with probability `power`: the
  inverse of `detectable_effect`, rounded up."""
  if effect == 0:
    raise ValueError("a zero effect is never detectable")
  return math.ceil((_z_sum(power, alpha) * sd / abs(effect)) ** 2)


def predicted_gain(episodes: rollout.Episodes) -> float:
  """Mean over episodes and steps of the chosen candidate's standardised predicted utility
  gain (the last candidate feature), over valid choices only.

  Noise-free: it says whether a policy picks what its features predict is best, whatever
  the environment then does with the action. A random policy scores about 0 (the feature is
  centred over each state's candidates); the best candidate of K scores up to sqrt(K - 1).
  """
  chosen = episodes.chosen[..., None]
  gain = np.take_along_axis(episodes.candidates[..., -1], chosen, -1)[..., 0]
  valid = np.take_along_axis(episodes.masks, chosen, -1)[..., 0].astype(bool)
  return float(gain[valid].mean()) if valid.any() else float("nan")


def rejected_by_reason(*episodes: rollout.Episodes) -> dict[str, int]:
  """Rewrites rejected as degenerate, by reason (most frequent first), over all episodes."""
  counts = collections.Counter(
      reason for ep in episodes for row in ep.rejected for reason in row if reason is not None)
  return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def degenerate_warning(name: str, *episodes: rollout.Episodes) -> str | None:
  """A readable warning when more than half of a policy's rewrites (over every episode and
  step) were rejected as degenerate, else None."""
  total = sum(len(row) for ep in episodes for row in ep.rejected)
  reasons = rejected_by_reason(*episodes)
  rejected = sum(reasons.values())
  if 2 * rejected <= total:
    return None
  why = ", ".join(f"{reason} {count}" for reason, count in reasons.items())
  # A rejected rewrite keeps x_t: with every one rejected, x_H = x_0 whatever the actions.
  effect = ("every episode ends at its x_0, so all policies see the same text and tie"
            if rejected == total else
            "most steps keep the previous text, so U(x_H) barely reflects the actions")
  return f"{rejected} of {total} {name} rewrites were rejected as degenerate ({why}): {effect}"


def _summary(episodes: rollout.Episodes, terminal: np.ndarray | None = None) -> dict:
  terminal = episodes.utility[:, -1] if terminal is None else terminal
  return {**mean_ci(terminal),
          "rating": float(episodes.rating[:, -1].mean()),
          "distance": float(episodes.distance[:, -1].mean()),
          "gain_over_anchor": paired_difference(terminal - episodes.utility[:, 0]),
          "predicted_gain": predicted_gain(episodes),
          "degenerate": int(episodes.degenerate),
          "rejected_by_reason": rejected_by_reason(episodes)}


def _report(name: str, summary: dict, warning: str | None, warnings: list[str],
            verbose: bool) -> None:
  if verbose:
    print(f"  {name:>16}: U(x_H) = {summary['mean']:.3f} ± {summary['ci95']:.3f}", flush=True)
  if warning:
    warnings.append(warning)
    print(f"warning: {warning}", flush=True)


def compare_policies(runner: rollout.EpisodeRunner, scorer, policy_params, ref_params,
                     anchors: np.ndarray, *, episodes_per_pair: int, best_of_n: int,
                     seed: int, greedy_baseline: bool = True,
                     predicted_baseline: bool = True,
                     verbose: bool = True) -> tuple[dict, dict]:
  """Returns ({policy: summary, "warnings": [str]}, {policy: Episodes of the first
  repetition}).

  A summary holds U(x_H)'s mean, 95% CI and sd, its terms, the gain over x_0, the chosen
  actions' `predicted_gain` (not for best-of-N, whose first try is just random), the
  rejected rewrites (`degenerate`, `rejected_by_reason`) and, paired anchor by anchor, the
  difference to random (`minus_random`; EAGLE also has `minus_reference`) with its sd and
  `detectable_80`. "warnings" lists policies whose rewrites were mostly rejected.
  """
  anchors = np.repeat(np.asarray(anchors), episodes_per_pair)
  env_seed = 10_000 + seed  # Disjoint from the training seeds.
  runs = {
      "eagle": rollout.scorer_policy(scorer, policy_params, greedy=True),
      "reference": rollout.scorer_policy(scorer, ref_params, greedy=True),
      "random": rollout.random_policy(seed),
  }
  if predicted_baseline:  # What the features alone earn: the policy's natural target.
    runs["predicted_best"] = rollout.predicted_gain_policy()
  if greedy_baseline:
    runs["greedy_one_step"] = rollout.greedy_one_step_policy(runner, env_seed)
  results, episodes, terminal, warnings = {}, {}, {}, []
  for name, choose in runs.items():
    ep = runner.run(anchors, choose, seed=env_seed)
    results[name], episodes[name], terminal[name] = _summary(ep), ep, ep.utility[:, -1]
    _report(name, results[name], degenerate_warning(name, ep), warnings, verbose)
  if best_of_n > 1:
    tries = [runner.run(anchors, rollout.random_policy(seed + 1 + i), seed=env_seed + 1 + i)
             for i in range(best_of_n)]
    name = f"best_of_{best_of_n}"
    terminal[name] = np.max(np.stack([t.utility[:, -1] for t in tries]), axis=0)
    results[name] = _summary(tries[0], terminal=terminal[name])
    del results[name]["predicted_gain"]  # The first try's random choices say nothing.
    results[name]["degenerate"] = int(sum(t.degenerate for t in tries))
    results[name]["rejected_by_reason"] = rejected_by_reason(*tries)
    _report(name, results[name], degenerate_warning(name, *tries), warnings, verbose)
  # Paired over the same anchors: far tighter than comparing the two means' own CIs.
  for name in terminal:
    if name != "random":
      results[name]["minus_random"] = paired_difference(terminal[name] - terminal["random"])
  results["eagle"]["minus_reference"] = paired_difference(
      terminal["eagle"] - terminal["reference"])
  results["warnings"] = warnings
  return results, episodes
