"""`train`: EAGLE policy gradient in the real environment, then held-out evaluation + report.

  python -m eagle_jax train --config experiments/demo.py            # fresh run
  python -m eagle_jax train --config experiments/demo.py --resume   # continue after a crash

Writes <workdir>/checkpoints/ (Orbax), metrics.jsonl + tb/ (TensorBoard), eval.json and
report.png (learning curves, policy comparison with 95% CIs, latent-space trajectories).
"""

from __future__ import annotations

import argparse
import math

from eagle_jax.commands import common


def add_args(parser: argparse.ArgumentParser) -> None:
  common.add_run_args(parser)
  parser.add_argument("--resume", action="store_true",
                      help="continue from the latest readable checkpoint in the workdir")
  parser.add_argument("--skip-eval", action="store_true",
                      help="train only; no held-out comparison or report")


def _print_power(diff: dict, episodes_per_pair: int) -> None:
  """Whether the held-out comparison could see EAGLE - random: the effect it detects at 80%
  power, and the held-out anchors that detecting the observed difference would take."""
  from eagle_jax import evaluate
  print(f"  sd {diff['sd']:.3f} over n = {diff['n']} paired episodes: detectable at 80% "
        f"power {diff['detectable_80']:.3f}")
  if diff["mean"] != 0 and diff["sd"] > 0:  # Else nothing to size (or no sd: n < 2).
    pairs = evaluate.anchors_for_power(diff["mean"], diff["sd"])
    # Repeats of one anchor are not independent: with several, this is a lower bound.
    anchors = math.ceil(pairs / episodes_per_pair)
    per = (f" ({pairs} paired episodes at {episodes_per_pair} per anchor)"
           if episodes_per_pair > 1 else "")
    print(f"  detecting {diff['mean']:+.3f} at 80% power needs ~{anchors} held-out anchors{per}")


def environment_name(config) -> str:
  if config.env.kind == "synthetic":
    return f"synthetic (rho {config.env.synthetic_rho})"
  return config.llm.model


def run(args) -> int:
  import numpy as np

  from eagle_jax import artifacts, distributed, evaluate, report, train
  distributed.initialize()
  config = common.config_from_args(args)
  workdir = common.workdir(config)
  world, table, runner = common.load_runner(config)
  scorer, _ = train.networks(config, config.rl.horizon)
  ref_params = train.load_params(workdir / "reference" / config.reference.kind,
                                 train.abstract_scorer_params(config, world, table, scorer))
  mesh = distributed.make_mesh()
  policy, _, history = train.train(config, runner, ref_params, mesh, resume=args.resume)
  if args.skip_eval or not distributed.is_main_process():
    return 0
  heldout = table.split(heldout=True)
  print(f"held-out comparison on {len(heldout)} unseen (movie, user) anchors:")
  results, episodes = evaluate.compare_policies(
      runner, scorer, policy, ref_params, heldout, episodes_per_pair=config.eval.episodes_per_pair,
      best_of_n=config.eval.best_of_n, seed=config.seed,
      greedy_baseline=config.eval.greedy_baseline,
      predicted_baseline=config.eval.predicted_baseline)
  artifacts.write_json(workdir / "eval.json", results)
  eagle = episodes["eagle"]
  report.write_report(
      workdir / "report.png", history=history,
      comparison=results,
      catalogue_z=world.item_z, trajectories=eagle.z, anchor_z=eagle.z[:, 0],
      title=f"EAGLE on {world.catalogue.name}: {environment_name(config)} environment, "
            f"{config.reference.kind} reference, H={config.rl.horizon}")
  for baseline in ("random", "reference"):
    d = results["eagle"][f"minus_{baseline}"]
    print(f"EAGLE - {baseline} (paired): {d['mean']:+.3f} ± {d['ci95']:.3f}")
    if baseline == "random":
      _print_power(d, config.eval.episodes_per_pair)
  print("predicted gain of the chosen actions (standardised; random ≈ 0): "
        + ", ".join(f"{name} {results[name]['predicted_gain']:+.3f}"
                    for name in ("eagle", "reference", "random")))
  print(f"report: {workdir / 'report.png'}")
  ex = int(np.argmax(eagle.utility[:, -1] - eagle.utility[:, 0]))
  print(f"example ({world.title(table.items[eagle.anchors[ex]])}):")
  for t, text in enumerate(eagle.texts[ex]):
    print(f"  x_{t} (U={eagle.utility[ex, t]:.3f}): {text[:300]}")
  return 0
