"""`python -m eagle_jax compile`: the update and the sampler compiled ahead of time for a slice
of fake CPU devices, in a process of its own (its XLA_FLAGS must precede JAX's start)."""

from __future__ import annotations

import json
import subprocess
import sys

import jax
import pytest

from eagle_jax.commands import compile as compile_command
from eagle_jax.config import load_config
from eagle_jax.errors import EagleError
from eagle_jax.llm import model as model_lib, registry
from eagle_jax.llm.config import ModelConfig
from tests.llm_files import hf_tensors, write_hf_dir

TINY = "experiments/pod.py:tiny"


def _compile(repo_root, *flags) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "eagle_jax", "compile", "--config", TINY, *flags],
                        cwd=repo_root, capture_output=True, text=True, timeout=300)


def test_pod_configs_load_with_a_model_shape():
  for spec in ("experiments/pod.py", TINY):
    config = load_config(spec)
    ModelConfig(**config.aot.shape.to_dict())
    assert config.rl.batch_size % (config.aot.hosts * config.aot.devices_per_host) == 0


def test_model_shape_from_the_files_when_here_else_from_the_config(tmp_path):
  config = load_config(TINY)
  shape, source = compile_command._model_shape(config)
  assert shape == ModelConfig(**config.aot.shape.to_dict())
  assert source.startswith("shape from config aot.shape (unknown model 'stand-in'")
  tiny = ModelConfig.tiny()
  folder = write_hf_dir(tmp_path / "hf", tiny,
                        hf_tensors(tiny, model_lib.init_params(tiny, jax.random.key(0))))
  shape, source = compile_command._model_shape(load_config(TINY, [f"llm.model={str(folder)!r}"]))
  assert (shape, source) == (tiny, f"shape read from {folder}")
  with pytest.raises(EagleError, match="not in the local HF cache"):  # Nothing downloaded.
    registry.resolve("nobody/no-such-model", download=False)


def test_compile_prints_memory_per_device(repo_root, tmp_path):
  out = tmp_path / "aot.json"
  result = _compile(repo_root, "--out", str(out))
  assert result.returncode == 0, result.stderr
  lines = result.stdout.splitlines()
  assert "4 fake CPU devices (2 hosts x 2)" in lines[0]
  assert "shape from config aot.shape" in lines[0]
  for name, mesh in (("update", "data 2 x model 2 mesh"), ("sampler decode", "data 1 x model 2"),
                     ("sampler prefill chunk", "8 rows x 64 tokens")):
    i = next(i for i, line in enumerate(lines) if line.startswith(f"{name} ("))
    assert mesh in lines[i]
    assert lines[i + 1].startswith("  per device: arguments ") and "; total " in lines[i + 1]
  assert any(line.startswith("peak per device <= ") for line in lines)
  report = json.loads(out.read_text())
  assert report["fits"] is None  # A CPU compiler's buffers are not a TPU's.
  assert report["model"]["config"]["num_layers"] == 2
  for sizes in report["programs"].values():
    assert sizes["total"] == (sizes["arguments"] + sizes["outputs"] - sizes["aliased"]
                              + sizes["temporaries"] + sizes["code"]) > 0


def test_compile_refuses_a_model_axis_that_does_not_divide_a_host(repo_root):
  result = _compile(repo_root, "--config.mesh.model=3")
  assert result.returncode == 2
  assert result.stderr.startswith("error: config key mesh.model=3: expected a divisor")
  assert "Traceback" not in result.stderr
