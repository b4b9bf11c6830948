"""`export`: the trained policy/value params as a small params-only Orbax checkpoint."""

from __future__ import annotations

import argparse

from eagle_jax.commands import common


def add_args(parser: argparse.ArgumentParser) -> None:
  common.add_run_args(parser)
  parser.add_argument("--step", type=int, help="checkpoint step (default: latest)")
  parser.add_argument("--out", help="output directory (default: <workdir>/export)")


def run(args) -> int:
  from eagle_jax.run import checkpoint, folder as run_folder
  config = common.config_from_args(args, announce=False)
  folder = run_folder.RunFolder(config)
  out = checkpoint.export_params(folder / run_folder.CHECKPOINTS, args.step,
                                 args.out or folder / run_folder.EXPORT)
  print(f"exported params -> {out}")
  return 0
