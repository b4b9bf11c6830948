"""Sweeps expand a grid into one run per point, each a valid CLI invocation."""

from eagle_jax import sweep
from eagle_jax.cli import build_parser, split_overrides
from eagle_jax.config import load_config


def test_grid_expands_to_valid_runs():
  runs = sweep.commands("experiments/sweep_reference.py", "runs/sweep", ["train-reference"], [])
  assert len(runs) == 9  # 3 kinds x 3 KL weights
  workdirs = [w for w, _ in runs]
  assert len(set(workdirs)) == 9 and "runs/sweep/kind=goptimal,kl_alpha=0.05" in workdirs
  argv = dict(runs)["runs/sweep/kind=goptimal,kl_alpha=0.05"][0]
  overrides, rest = split_overrides(argv[3:])
  args = build_parser().parse_args(rest)
  config = load_config(args.config, overrides + ["workdir=" + args.workdir])
  assert config.reference.kind == "goptimal" and config.rl.kl_alpha == 0.05
  assert config.workdir == "runs/sweep/kind=goptimal,kl_alpha=0.05"
