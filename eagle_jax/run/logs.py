"""Run logs people can look at: TensorBoard scalars + a metrics.jsonl, on process 0 only."""

from __future__ import annotations

import json
import pathlib

import jax

from eagle_jax.run import artifacts, folder as run_folder


class MetricsLogger:
  """Writes scalars to TensorBoard (`tensorboard --logdir <workdir>/tb`) and metrics.jsonl."""

  def __init__(self, workdir, *, enabled: bool | None = None, truncate_after: int | None = None):
    """truncate_after: drop logged steps beyond it (a resumed run replays them)."""
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.path = pathlib.Path(workdir) / run_folder.METRICS
    self._writer = None
    if self.enabled:
      if truncate_after is not None:
        kept = [r for r in read_metrics(workdir) if r["step"] <= truncate_after]
        artifacts.write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
      from tensorboardX import SummaryWriter
      self.path.parent.mkdir(parents=True, exist_ok=True)
      self._writer = SummaryWriter(str(pathlib.Path(workdir) / run_folder.TENSORBOARD))

  def write(self, step: int, scalars: dict[str, float]) -> None:
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in scalars.items()}
    for k, v in clean.items():
      self._writer.add_scalar(k, v, step)
    with open(self.path, "a") as f:  # One line per step: a crash loses at most that line.
      f.write(json.dumps({"step": step, **clean}) + "\n")
    self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()


def read_metrics(workdir) -> list[dict]:
  path = pathlib.Path(workdir) / run_folder.METRICS
  if not path.is_file():
    return []
  rows = []
  for line in path.read_text().splitlines():
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:  # A line cut by a kill -9: skip it.
      continue
  return rows
