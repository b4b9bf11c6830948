"""Sweeps expand a grid into one run per point, each a valid CLI invocation; a cached stage
that no swept key reads runs once."""

import pytest

from eagle_jax.loop import sweep
from eagle_jax.cli import build_parser, main, split_overrides
from eagle_jax.config import load_config

STAGES = ["prepare", "actions", "design", "train-reference", "train"]


def test_grid_expands_to_valid_runs():
  steps = sweep.plan("experiments/sweep_reference.py", "runs/sweep", ["train-reference"], [])
  assert len(steps) == 9  # 3 kinds x 3 KL weights
  workdirs = [s.workdir for s in steps]
  assert len(set(workdirs)) == 9 and "runs/sweep/kind=goptimal,kl_coef=0.05" in workdirs
  argv = next(s.argv for s in steps if s.workdir == "runs/sweep/kind=goptimal,kl_coef=0.05")
  overrides, rest = split_overrides(argv[3:])
  args = build_parser().parse_args(rest)
  config = load_config(args.config, overrides + ["workdir=" + args.workdir])
  assert config.reference.kind == "goptimal" and config.rl.kl_coef == 0.05
  assert config.workdir == "runs/sweep/kind=goptimal,kl_coef=0.05"


def _runs(steps, command):
  return [s.workdir for s in steps if s.command == command and s.shared_from is None]


def test_four_point_sweep_over_reference_keys_runs_upstream_stages_once(tmp_path):
  spec = tmp_path / "sweep.py"
  spec.write_text(
      "import sys\nsys.path.insert(0, 'experiments')\nimport demo\n\n"
      "def get_config(arg=''):\n  return demo.get_config(arg)\n\n"
      "def get_sweep():\n  return {'reference.lr': [1e-3, 3e-3], "
      "'reference.weight_decay': [0.0, 0.1]}\n")
  steps = sweep.plan(str(spec), "runs/s", STAGES, [])
  assert len(steps) == 4 * len(STAGES)
  for command in ("prepare", "actions", "design"):
    assert _runs(steps, command) == ["runs/s/lr=0.001,weight_decay=0.0"], command
  assert len(_runs(steps, "train-reference")) == 4 and len(_runs(steps, "train")) == 4
  shared = [s for s in steps if s.shared_from]
  assert {s.shared_from for s in shared} == {"runs/s/lr=0.001,weight_decay=0.0"}


def test_a_swept_upstream_key_splits_the_stages_that_read_it():
  steps = sweep.plan("experiments/sweep_reference.py", "runs/sweep", STAGES,
                     ["design.subset_size=4"])
  # reference.kind is read from train-reference on: one design, three references.
  assert len(_runs(steps, "design")) == 1 and len(_runs(steps, "train-reference")) == 3
  assert len(_runs(steps, "train")) == 9


def test_a_config_without_a_grid_is_one_line(capsys):
  assert main(["sweep", "--config", "experiments/demo.py:smoke", "--dry-run"]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: sweep file experiments/demo.py defines no get_sweep()")
  assert len(err.splitlines()) == 1


@pytest.mark.parametrize("stages", ["prepare,nope", "sweep"])
def test_unknown_stage_is_one_line(capsys, stages):
  assert main(["sweep", "--config", "experiments/sweep_reference.py", "--stages", stages,
               "--dry-run"]) == 2
  assert "unknown stage" in capsys.readouterr().err
