"""`check-signal`: does the learner find a signal of known strength? (no LLM; minutes on a CPU)

  python -m eagle_jax check-signal --config experiments/demo.py --rho 0.1 0.3 1.0 \
      --updates 20 50 100

Needs `prepare` (the latent space and E_D). For each planted correlation rho between the
policy's predicted-gain feature and the real one-step gain, it builds its own anchors (many
held-out pairs are free without an LLM), runs the design, the reference SFT and the policy
gradient of a real run in the synthetic environment (`eagle_jax/environment/synthetic.py`), and
compares EAGLE with random, its reference and the feature's argmax on held-out anchors after
each update count. Writes <workdir>/check_signal.{json,md}. Run it before spending
accelerator time: a learner that does not beat random here at rho = 0.3 will not in a real
environment.
"""

from __future__ import annotations

import argparse

from eagle_jax.commands import common


def add_args(parser: argparse.ArgumentParser) -> None:
  common.add_run_args(parser)
  parser.add_argument("--rho", type=float, nargs="+", default=[0.1, 0.3, 1.0],
                      help="planted correlations in (0, 1] (default: %(default)s)")
  parser.add_argument("--updates", type=int, nargs="+", default=[20, 50, 100],
                      help="update counts at which to evaluate (default: %(default)s)")
  parser.add_argument("--anchors", type=int, default=400,
                      help="anchors of the check, half of them held out (default: %(default)s)")


def run(args) -> int:
  from eagle_jax.loop import signal_check
  from eagle_jax.run import artifacts, folder as run_folder
  from eagle_jax.world import prepared
  from eagle_jax.errors import EagleError
  if any(not 0 < r <= 1 for r in args.rho):
    raise EagleError(f"--rho {args.rho}: every value must lie in (0, 1]")
  if any(u < 1 for u in args.updates):
    raise EagleError(f"--updates {args.updates}: every value must be >= 1")
  args.overrides += [f"actions.num_anchors={args.anchors}", "actions.heldout_fraction=0.5"]
  config = common.config_from_args(args)
  world = prepared.load(config)
  table = signal_check.anchors_table(config, world)
  print(f"{table.num_anchors} anchors ({int(table.heldout.sum())} held out), "
        f"{table.mask.shape[1]} candidates each; horizon {config.rl.horizon}, batch "
        f"{config.rl.batch_size}, kl_coef {config.rl.kl_coef}, reward {config.rl.reward}",
        flush=True)
  rows = []
  for rho in args.rho:
    rows += signal_check.check_rho(config, world, table, rho, args.updates)
    print(signal_check.format_table(rows[-len(args.updates):]), flush=True)
  out = run_folder.RunFolder(config) / run_folder.CHECK_SIGNAL
  artifacts.write_json(out.with_suffix(".json"), rows)
  artifacts.write_text(out.with_suffix(".md"), signal_check.format_table(rows) + "\n")
  print(f"\n{signal_check.format_table(rows)}\n-> {out.with_suffix('.md')}")
  return 0
