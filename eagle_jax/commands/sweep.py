"""`sweep`: run (or print with --dry-run) the stages of every point of a config grid.

  python -m eagle_jax sweep --config experiments/sweep_reference.py --dry-run
  python -m eagle_jax sweep --config experiments/sweep_reference.py --stages prepare,train-reference

A cached stage (prepare, actions, design, train-reference) whose inputs no swept key touches
runs once; the other points reuse its artefacts.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys

from eagle_jax.errors import EagleError


def add_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--stages", default="describe,prepare,actions,design,train-reference,train",
                      help="comma-separated commands to run per point (default: %(default)s)")
  parser.add_argument("--workdir", default="runs/sweep", help="parent of the point run dirs")
  parser.add_argument("--dry-run", action="store_true", help="print the commands only")


def run(args) -> int:
  from eagle_jax.loop import sweep
  from eagle_jax.commands import COMMANDS
  stages = [s for s in args.stages.split(",") if s]
  unknown = [s for s in stages if s not in COMMANDS or s == "sweep"]
  if unknown:
    raise EagleError(f"--stages: unknown stage(s) {unknown} (known: {sorted(COMMANDS)})")
  steps = sweep.plan(args.config, args.workdir, stages, list(args.overrides))
  shared = sum(s.shared_from is not None for s in steps)
  print(f"{len(steps) // len(stages)} sweep points x {len(stages)} stages: {len(steps) - shared} "
        f"to run, {shared} shared with an earlier point")
  for step in steps:
    if step.shared_from:
      print(f"# {step.workdir}: {step.command} shared from {step.shared_from}", flush=True)
      if not args.dry_run:
        sweep.share(step, args.config)
      continue
    print(shlex.join(step.argv), flush=True)
    if not args.dry_run:
      code = subprocess.call([sys.executable, *step.argv[1:]])
      if code:
        raise EagleError(f"sweep point {step.workdir}: `{step.command}` exited with {code}")
  return 0
