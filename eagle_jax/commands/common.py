"""Shared CLI glue: the config from flags, announced and saved in the run folder."""

from __future__ import annotations

import argparse

from eagle_jax.config import load_config


def add_run_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--workdir", help="run directory (overrides config.workdir)")


def config_from_args(args, extra: tuple[tuple[str, str], ...] = (), announce: bool = True):
  """The config file plus --config.* overrides plus the flags that alias config keys. With
  `announce`, the run folder and the changes to the file's values are printed (a stage saves
  the resolved config as <workdir>/config.json with its artefacts)."""
  from eagle_jax.run import folder as run_folder
  overrides = list(args.overrides)
  for flag, key in (("workdir", "workdir"),) + extra:
    value = getattr(args, flag, None)
    if value:
      overrides.append(f"{key}={value!r}")
  config = load_config(args.config, overrides)
  if announce:
    changed = ", ".join(overrides) or "no overrides"
    path = run_folder.RunFolder(config) / run_folder.CONFIG
    print(f"config {args.config} ({changed}); resolved config: {path}", flush=True)
  return config


def print_environment(environment, config) -> None:
  """The synthetic environment's calibration (an LLM environment has nothing to say yet)."""
  s = getattr(environment, "stats", None)
  if s:
    print(f"synthetic environment: rho {s['rho']:.3f} (asked {config.env.synthetic_rho}), "
          f"noise sigma {s['sigma']:.3g}; one step ahead the best candidate gains "
          f"+{s['oracle_gain']:.3f} over a random pick, the predicted best "
          f"{s['predicted_gain']:+.3f}", flush=True)
