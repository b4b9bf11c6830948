"""Shared CLI glue: the config from flags, announced and saved in the run folder; the
pre-train stages in a multi-process job."""

from __future__ import annotations

import argparse
import functools
from typing import Callable

from eagle_jax.config import load_config
from eagle_jax.errors import EagleError


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


def on_process_zero(name: str, work: Callable[[], int | None]) -> int:
  """Runs `work` on process 0 while the other processes of the job wait for it and share its
  outcome (an EagleError if it failed), so no process runs ahead or exits before a
  collective; on one process, `work()`."""
  import jax
  import numpy as np
  from jax.experimental import multihost_utils

  from eagle_jax import distributed
  if jax.process_count() == 1:
    return work() or 0
  # The broadcast of process 0's exit status is a collective over every process: the
  # barrier, met by process 0 whether its work succeeded or not.
  if distributed.is_main_process():
    status = 1
    try:
      status = work() or 0
      return status
    finally:
      multihost_utils.broadcast_one_to_all(np.int32(status))
  me = f"process {jax.process_index()} of {jax.process_count()}"
  print(f"{me}: {name} runs on process 0; waiting for it", flush=True)
  status = int(multihost_utils.broadcast_one_to_all(np.int32(0)))
  if status:
    raise EagleError(f"{name} failed on process 0 (exit status {status}); its log says why")
  print(f"{me}: process 0 finished {name}", flush=True)
  return 0


def process_zero_stage(run):
  """A pre-train stage's `run(args)`: in a multi-process job (`distributed.initialize()`),
  process 0 runs the stage host-locally and writes its artefacts to the shared workdir while
  the others wait (`on_process_zero`); on one process, the stage as it is."""

  @functools.wraps(run)
  def wrapped(args) -> int:
    from eagle_jax import distributed
    distributed.initialize()
    return on_process_zero(f"`{args.command}`", lambda: run(args))

  return wrapped
