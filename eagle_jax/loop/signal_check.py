"""Planted-signal check: the whole EAGLE learner on the synthetic environment, rho x updates.

For each planted correlation rho (`synthetic_env`), on the config's prepared world: fresh
anchors and candidates, one-step rollouts of the design's anchors, the G-optimal design,
reference SFT, then policy-gradient updates, with a held-out comparison after each update
count. The same code paths as a real run (features, nets, `reference`, `train.train`,
`evaluate.compare_policies`); only the environment is swapped, so it runs in minutes on a
CPU. A row says how much of what the features make available the learner recovered:

  recovered = (EAGLE - random) / (predicted_best - random)

where predicted_best takes the argmax of the predicted-gain feature at every step ("n/a"
when that gain's own 95% CI includes zero: the held-out set cannot see it).
"""

from __future__ import annotations

import copy
import tempfile

import numpy as np

from eagle_jax import distributed
from eagle_jax.actions import anchors
from eagle_jax.agent import reference
from eagle_jax.design import subsets as design_subsets
from eagle_jax.loop import evaluate, rollout, train
from eagle_jax.config import apply_override
from eagle_jax.environment.synthetic import SyntheticEnvironment


def trained_reference(config, world, table, runner, scorer):
  """One-step rollouts of the design's anchors, the design, and the reference SFT on it."""
  rows = table.design_rows(config.design.num_anchors)
  z_next, next_utility, _ = runner.one_step_all(rows, seed=config.seed)
  subsets, _ = design_subsets.design_subsets(z_next, table.mask[rows], config.design, config.seed)
  c = config.reference
  train_batch, heldout_batch = reference.design_batches(
      world, table, rows, subsets, next_utility, c.kind, config.rl.horizon, c.label_smoothing)
  params, metrics = reference.train_reference(
      scorer, train_batch, heldout_batch, lr=c.lr, steps=c.steps, mesh=distributed.make_mesh(),
      seed=config.seed, weight_decay=c.weight_decay, progress=False)
  return params, metrics


def check_rho(config, world, table, rho: float, updates: list[int]) -> list[dict]:
  """Rows {rho, updates, eagle/reference/predicted_best minus random, recovered, ...} for
  one planted rho, evaluated on the table's held-out anchors after each update count."""
  environment = SyntheticEnvironment.calibrated(world, table, rho, seed=config.seed)
  runner = rollout.EpisodeRunner(world, table, environment, horizon=config.rl.horizon,
                                 personalise=False)
  scorer, _ = train.networks(config, config.rl.horizon)
  ref_params, ref_metrics = trained_reference(config, world, table, runner, scorer)
  heldout = table.split(heldout=True)
  rows = []
  with tempfile.TemporaryDirectory() as workdir:  # Checkpoints only: the table is the output.
    for i, n in enumerate(sorted(updates)):
      run_config = copy.deepcopy(config)
      for override in (f"workdir={workdir!r}", f"rl.iterations={n}"):
        apply_override(run_config, override)
      policy, _, history = train.train(run_config, runner, ref_params, distributed.make_mesh(),
                                       resume=i > 0, progress=False)
      results, _ = evaluate.compare_policies(
          runner, scorer, policy, ref_params, heldout, episodes_per_pair=1, best_of_n=0,
          seed=config.seed, greedy_baseline=False, predicted_baseline=True, verbose=False)
      diff = {name: results[name]["minus_random"]
              for name in ("eagle", "reference", "predicted_best")}
      # A ratio is only meaningful when the features' own gain is detectably above zero.
      best = diff["predicted_best"]
      available = best["mean"] if best["mean"] - best["ci95"] > 0 else float("nan")
      rows.append({
          "rho": environment.stats["rho"], "rho_asked": rho, "updates": n,
          "eagle_minus_random": diff["eagle"], "reference_minus_random": diff["reference"],
          "predicted_best_minus_random": diff["predicted_best"],
          "eagle_minus_reference": results["eagle"]["minus_reference"],
          "recovered": diff["eagle"]["mean"] / available,
          "eagle_predicted_gain": results["eagle"]["predicted_gain"],
          "train_utility_first": history[0]["utility/total"],
          "train_utility_last": float(np.mean([h["utility/total"] for h in history[-5:]])),
          "reference_heldout_entropy": ref_metrics.get("heldout_entropy", float("nan")),
          "oracle_one_step_gain": environment.stats["oracle_gain"],
          "predicted_one_step_gain": environment.stats["predicted_gain"],
      })
  return rows


def anchors_table(config, world):
  """The check's own anchors: many held-out pairs cost nothing without an LLM, and they are
  what gives the comparison its power."""
  return anchors.build_table(world, config, progress=False)


def format_table(rows: list[dict]) -> str:
  """A markdown table of the check's rows."""
  fmt = lambda d: f"{d['mean']:+.3f} ± {d['ci95']:.3f}"  # noqa: E731
  lines = ["| rho | updates | EAGLE − random | reference − random | predicted best − random "
           "| EAGLE − reference | recovered | EAGLE's predicted gain (std.) |",
           "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(
        f"| {r['rho']:.2f} | {r['updates']} | {fmt(r['eagle_minus_random'])} "
        f"| {fmt(r['reference_minus_random'])} | {fmt(r['predicted_best_minus_random'])} "
        f"| {fmt(r['eagle_minus_reference'])} "
        f"| {'n/a' if np.isnan(r['recovered']) else format(r['recovered'], '.0%')} "
        f"| {r['eagle_predicted_gain']:+.2f} |")
  return "\n".join(lines)
