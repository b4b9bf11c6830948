"""Hyper-parameter sweeps: a config file's grid expanded into one run directory per point.

A sweep file defines `get_config()` (the base run) and `get_sweep()`, a dict from config
key to the values to try; the grid is their product. Every point is an ordinary run with
`--config.key=value` overrides and its own workdir, so each can be resumed or inspected.
A cached stage whose inputs (`run_folder.inputs`) the swept keys do not touch runs once: the
first point that needs it builds it, the others get its artefacts (hard links) and reuse them.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import pathlib

from eagle_jax.run import folder as run_folder
from eagle_jax.config import load_config
from eagle_jax.errors import EagleError


def load_grid(spec: str) -> dict[str, list]:
  """`get_sweep()` of the config file `spec` (`file.py` or `file.py:variant`)."""
  path = pathlib.Path(spec.partition(":")[0])
  if not path.is_file():
    raise EagleError(f"sweep file {path} not found")
  module_spec = importlib.util.spec_from_file_location("_eagle_sweep", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
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


@dataclasses.dataclass(frozen=True)
class Step:
  """One command of one point: run `argv`, or take the artefacts `shared_from` a point."""
  workdir: str
  command: str
  argv: list[str]
  overrides: list[str]           # the point's config overrides
  shared_from: str | None = None


def plan(config_spec: str, base_workdir: str, commands: list[str],
         extra: list[str]) -> list[Step]:
  """Every point's commands in order; a cached stage already planned for an earlier point
  with the same inputs is shared from it instead of run again."""
  steps, built = [], {}
  for point in expand(load_grid(config_spec)):
    workdir = str(pathlib.Path(base_workdir) / point_name(point))
    overrides = [f"{k}={v if isinstance(v, str) else repr(v)}" for k, v in point.items()]
    config = load_config(config_spec, [*overrides, *extra, f"workdir={workdir!r}"])
    for command in commands:
      argv = ["python", "-m", "eagle_jax", command, "--config", config_spec, "--workdir",
              workdir, *(f"--config.{o}" for o in overrides + extra)]
      names = run_folder.stages_of(command)
      key = (command, *(run_folder.inputs_key(config, s) for s in names))
      source = built.setdefault(key, workdir) if names else workdir
      steps.append(Step(workdir, command, argv, overrides + extra,
                        None if source == workdir else source))
  return steps


def share(step: Step, config_spec: str) -> None:
  """Gives `step.workdir` the artefacts of `step.command`'s stages from `step.shared_from`."""
  def folder(workdir):  # The point's paths (a reference's folder is named by its kind).
    return run_folder.RunFolder(
        load_config(config_spec, [*step.overrides, f"workdir={workdir!r}"]))
  source, target = folder(step.shared_from), folder(step.workdir)
  for stage in run_folder.stages_of(step.command):
    source.copy_stage(stage, target)
  target.save_config()  # As a stage run there would have.
