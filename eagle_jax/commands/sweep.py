"""`sweep`: run (or print with --dry-run) the stages of every point of a config grid.

  python -m eagle_jax sweep --config experiments/sweep_reference.py --dry-run
  python -m eagle_jax sweep --config experiments/sweep_reference.py --stages prepare,train-reference
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys

from eagle_jax.errors import EagleError


def add_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--stages", default="prepare,actions,design,train-reference,train",
                      help="comma-separated commands to run per point (default: %(default)s)")
  parser.add_argument("--workdir", default="runs/sweep", help="parent of the point run dirs")
  parser.add_argument("--dry-run", action="store_true", help="print the commands only")


def run(args) -> int:
  from eagle_jax import sweep
  stages = [s for s in args.stages.split(",") if s]
  from eagle_jax.cli import COMMANDS
  unknown = [s for s in stages if s not in COMMANDS or s == "sweep"]
  if unknown:
    raise EagleError(f"--stages: unknown stage(s) {unknown} (known: {sorted(COMMANDS)})")
  extra = [f"--config.{o}" for o in args.overrides]
  runs = sweep.commands(args.config, args.workdir, stages, extra)
  print(f"{len(runs)} sweep points x {len(stages)} stages")
  for workdir, argvs in runs:
    for argv in argvs:
      print(shlex.join(argv), flush=True)
      if not args.dry_run:
        code = subprocess.call([sys.executable, *argv[1:]])
        if code:
          raise EagleError(f"sweep point {workdir}: `{argv[3]}` exited with {code}")
  return 0
