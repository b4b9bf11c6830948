"""The whole CLI on the smoke config, and `train` killed with SIGKILL then `--resume`d.

The environment is a tiny random decoder with SmolLM2's real tokenizer, saved as an HF
checkpoint folder and passed as --config.llm.model, so every stage runs its real loading
path in a fresh process. The acceptance check of the training issue: the resumed run's
metrics and exported params equal an uninterrupted run's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from eagle_jax import checkpoint
from eagle_jax.llm import model as model_lib
from eagle_jax.llm.config import ModelConfig
from eagle_jax.llm.weights import load_model
from tests.llm_files import hf_tensors, write_hf_dir

ITERATIONS = 8
# Metrics that depend on wall time, not on the computation.
TIMING = ("time/", "env/tokens_per_s")


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory):
  path = tmp_path_factory.mktemp("llm") / "tiny-smollm2"
  real = load_model("smollm2")
  config = dataclasses.replace(ModelConfig.tiny("llama"), qk_norm=False,
                               vocab_size=real.config.vocab_size)
  params = model_lib.init_params(config, jax.random.key(0))
  write_hf_dir(path, config, hf_tensors(config, params))
  real.tokenizer.save_pretrained(str(path))
  return path


def _cli(workdir, tiny_llm, *args):
  return [sys.executable, "-m", "eagle_jax", *args, "--config", "experiments/demo.py:smoke",
          "--workdir", str(workdir), f"--config.llm.model={str(tiny_llm)!r}",
          f"--config.rl.iterations={ITERATIONS}"]


def _run(workdir, tiny_llm, *args):
  out = subprocess.run(_cli(workdir, tiny_llm, *args), capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return out


def _metrics(workdir):
  lines = (workdir / "metrics.jsonl").read_text().splitlines() if (
      workdir / "metrics.jsonl").is_file() else []
  rows = [json.loads(line) for line in lines]
  return [{k: v for k, v in r.items() if not k.startswith(TIMING)} for r in rows]


def test_kill_9_during_train_then_resume_equals_uninterrupted(tmp_path, tiny_llm):
  a, b = tmp_path / "a", tmp_path / "b"
  for stage in ("prepare", "actions", "design", "train-reference"):
    _run(a, tiny_llm, stage)
  shutil.copytree(a, b)
  _run(a, tiny_llm, "train", "--skip-eval")

  proc = subprocess.Popen(_cli(b, tiny_llm, "train", "--skip-eval"), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 300
  while len(_metrics(b)) < 2 and proc.poll() is None and time.monotonic() < deadline:
    time.sleep(0.02)
  os.kill(proc.pid, signal.SIGKILL)
  proc.communicate(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  done_before_kill = len(_metrics(b))
  assert 2 <= done_before_kill < ITERATIONS

  out = _run(b, tiny_llm, "train", "--skip-eval", "--resume")
  assert "resumed from" in out.stdout
  assert _metrics(b) == _metrics(a)
  for workdir in (a, b):
    _run(workdir, tiny_llm, "export")
  exported = [checkpoint.load_exported(w / "export", None) for w in (a, b)]
  jax.tree.map(np.testing.assert_array_equal, exported[0], exported[1])

  out = _run(a, tiny_llm, "steer", "--movie", "movieId:1", "--user", "1")
  assert "x_2: U = " in out.stdout and "action: " in out.stdout
