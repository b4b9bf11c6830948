"""Policy comparison on held-out (movie, user) anchors, with 95% confidence intervals.

All policies run the same anchors with the same environment seeds (common random numbers):
EAGLE (the trained policy, argmax), the reference policy alone (argmax), random actions,
greedy one-step look-ahead in the real environment (K rewrites per decision), and
best-of-N random episodes (picked by the true utility: N times the LLM calls).
"""

from __future__ import annotations

import numpy as np

from eagle_jax import rollout


def mean_ci(x) -> dict:
  x = np.asarray(x, np.float64)
  half = 1.96 * x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else float("nan")
  return {"mean": float(x.mean()), "ci95": float(half), "n": int(len(x))}


def _summary(episodes: rollout.Episodes, terminal: np.ndarray | None = None) -> dict:
  terminal = episodes.utility[:, -1] if terminal is None else terminal
  return {**mean_ci(terminal),
          "rating": float(episodes.rating[:, -1].mean()),
          "distance": float(episodes.distance[:, -1].mean()),
          "gain_over_anchor": mean_ci(terminal - episodes.utility[:, 0]),
          "degenerate": int(episodes.degenerate)}


def compare_policies(runner: rollout.EpisodeRunner, scorer, policy_params, ref_params,
                     anchors: np.ndarray, *, episodes_per_pair: int, best_of_n: int,
                     seed: int, greedy_baseline: bool = True) -> tuple[dict, dict]:
  """Returns ({policy: summary}, {policy: Episodes of the first repetition}). A summary
  holds U(x_H)'s mean and 95% CI, its terms, the gain over x_0 and, paired anchor by anchor,
  the difference to random (`minus_random`; EAGLE also has `minus_reference`)."""
  anchors = np.repeat(np.asarray(anchors), episodes_per_pair)
  env_seed = 10_000 + seed  # Disjoint from the training seeds.
  runs = {
      "eagle": rollout.scorer_policy(scorer, policy_params, runner, greedy=True),
      "reference": rollout.scorer_policy(scorer, ref_params, runner, greedy=True),
      "random": rollout.random_policy(runner, seed),
  }
  if greedy_baseline:
    runs["greedy_one_step"] = rollout.greedy_one_step_policy(runner, env_seed)
  results, episodes, terminal = {}, {}, {}
  for name, choose in runs.items():
    ep = runner.run(anchors, choose, seed=env_seed)
    results[name], episodes[name], terminal[name] = _summary(ep), ep, ep.utility[:, -1]
    print(f"  {name:>16}: U(x_H) = {results[name]['mean']:.3f} ± {results[name]['ci95']:.3f}",
          flush=True)
  if best_of_n > 1:
    tries = [runner.run(anchors, rollout.random_policy(runner, seed + 1 + i), seed=env_seed + 1 + i)
             for i in range(best_of_n)]
    name = f"best_of_{best_of_n}"
    terminal[name] = np.max(np.stack([t.utility[:, -1] for t in tries]), axis=0)
    results[name] = _summary(tries[0], terminal=terminal[name])
    results[name]["degenerate"] = int(sum(t.degenerate for t in tries))
    print(f"  {name:>16}: U(x_H) = {results[name]['mean']:.3f} ± {results[name]['ci95']:.3f}",
          flush=True)
  # Paired over the same anchors: far tighter than comparing the two means' own CIs.
  for name in results:
    if name != "random":
      results[name]["minus_random"] = mean_ci(terminal[name] - terminal["random"])
  results["eagle"]["minus_reference"] = mean_ci(terminal["eagle"] - terminal["reference"])
  return results, episodes
