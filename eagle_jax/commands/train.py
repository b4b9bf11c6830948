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
  from eagle_jax.loop import evaluate
  print(f"  sd {diff['sd']:.3f} over n = {diff['n']} paired episodes: detectable at 80% "
        f"power {diff['detectable_80']:.3f}")
  if diff["mean"] != 0 and diff["sd"] > 0:  # Else nothing to size (or no sd: n < 2).
    pairs = evaluate.anchors_for_power(diff["mean"], diff["sd"])
    # Repeats of one anchor are not independent: with several, this is a lower bound.
    anchors = math.ceil(pairs / episodes_per_pair)
    per = (f" ({pairs} paired episodes at {episodes_per_pair} per anchor)"
           if episodes_per_pair > 1 else "")
    print(f"  detecting {diff['mean']:+.3f} at 80% power needs ~{anchors} held-out anchors{per}")


def run(args) -> int:
  from eagle_jax import distributed
  from eagle_jax.environment import build as runtime
  from eagle_jax.loop import rollout, stages, train
  from eagle_jax.world import prepared
  distributed.initialize()
  config = common.config_from_args(args, announce=distributed.is_main_process())
  world = prepared.load(config)
  table = stages.load_anchors(config)
  ref_params = stages.load_reference(config, world, table, host_local=True)
  environment = runtime.build_environment(config, world, table)
  common.print_environment(environment, config)
  runner = rollout.make_runner(config, world, table, environment)
  policy, _, history = train.train(config, runner, ref_params,
                                   distributed.mesh_from_config(config), resume=args.resume)
  if args.skip_eval:
    return 0
  # The others wait: exiting first would leave process 0 alone in the job's shutdown.
  return common.on_process_zero(
      "the held-out evaluation", lambda: _evaluate(config, world, table, runner, policy,
                                                   ref_params, history))


def _evaluate(config, world, table, runner, policy, ref_params, history) -> int:
  import numpy as np

  from eagle_jax.loop import stages
  from eagle_jax.run import folder as run_folder
  print(f"held-out comparison on {int(table.heldout.sum())} unseen (movie, user) anchors:")
  results, episodes = stages.evaluate(config, runner, policy, ref_params, history)
  eagle = episodes["eagle"]
  for baseline in ("random", "reference"):
    d = results["eagle"][f"minus_{baseline}"]
    print(f"EAGLE - {baseline} (paired): {d['mean']:+.3f} ± {d['ci95']:.3f}")
    if baseline == "random":
      _print_power(d, config.eval.episodes_per_pair)
  print("predicted gain of the chosen actions (standardised; random ≈ 0): "
        + ", ".join(f"{name} {results[name]['predicted_gain']:+.3f}"
                    for name in ("eagle", "reference", "random")))
  print(f"report: {run_folder.RunFolder(config) / run_folder.REPORT}")
  ex = int(np.argmax(eagle.utility[:, -1] - eagle.utility[:, 0]))
  print(f"example ({world.title(table.items[eagle.anchors[ex]])}):")
  for t, text in enumerate(eagle.texts[ex]):
    print(f"  x_{t} (U={eagle.utility[ex, t]:.3f}): {text[:300]}")
  return 0
