"""Hyper-parameter sweeps: a config file's grid expanded into one run directory per point.

A sweep file defines `get_config()` (the base run) and `get_sweep()`, a dict from config
key to the values to try; the grid is their product. Every point is an ordinary run with
`--config.key=value` overrides and its own workdir, so each can be resumed or inspected.
"""

from __future__ import annotations

import importlib.util
import itertools
import pathlib

from eagle_jax.errors import EagleError


def load_grid(path: str) -> dict[str, list]:
  spec = importlib.util.spec_from_file_location("_eagle_sweep", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_sweep"):
    raise EagleError(f"sweep file {path} defines no get_sweep() (a dict key -> list of values)")
  grid = module.get_sweep()
  if not grid or not all(isinstance(v, (list, tuple)) and v for v in grid.values()):
    raise EagleError(f"get_sweep() in {path} must map config keys to non-empty lists")
  return grid


def expand(grid: dict[str, list]) -> list[dict]:
  keys = list(grid)
  return [dict(zip(keys, values)) for values in itertools.product(*grid.values())]


def point_name(point: dict) -> str:
  return ",".join(f"{k.split('.')[-1]}={v}" for k, v in point.items())


def commands(config_path: str, base_workdir: str, stages: list[str], extra: list[str]):
  """[(workdir, [argv for each stage])] for every grid point."""
  runs = []
  for point in expand(load_grid(config_path)):
    workdir = str(pathlib.Path(base_workdir) / point_name(point))
    overrides = [f"--config.{k}={v if isinstance(v, str) else repr(v)}" for k, v in point.items()]
    runs.append((workdir, [["python", "-m", "eagle_jax", stage, "--config", config_path,
                            "--workdir", workdir, *overrides, *extra] for stage in stages]))
  return runs
