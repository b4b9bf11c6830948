"""The CLI: --help lists the stages, user errors exit 2 with one line and no traceback."""

import os
import subprocess
import sys


def _run(*args):
  return subprocess.run([sys.executable, "-m", "eagle_jax", *args], capture_output=True,
                        text=True, timeout=120)


def test_help_lists_commands():
  out = _run("--help")
  assert out.returncode == 0
  assert "prepare" in out.stdout


def test_unknown_config_key_is_one_line_error(tmp_path):
  out = _run("prepare", "--workdir", str(tmp_path / "run"), "--config.als.dimm=3")
  assert out.returncode == 2
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: unknown config key 'als.dimm'")
  assert not (tmp_path / "run").exists()


def test_missing_data_dir_is_one_line_error(tmp_path):
  out = _run("prepare", "--workdir", str(tmp_path / "run"), "--data", str(tmp_path / "nope"))
  assert out.returncode == 2, out.stderr
  assert "Traceback" not in out.stderr
  assert str(tmp_path / "nope") in out.stderr
  assert not (tmp_path / "run").exists()


def test_missing_descriptions_file_fails_before_the_latent_space_is_fit(tmp_path):
  out = _run("prepare", "--config", "experiments/demo.py:smoke", "--workdir",
             str(tmp_path / "run"), "--descriptions", str(tmp_path / "nope.csv"))
  assert out.returncode == 2 and "Traceback" not in out.stderr
  assert "nope.csv: not found" in out.stderr
  assert not (tmp_path / "run" / "latent.npz").exists()


def test_out_of_range_value_is_one_line_error_before_any_work(tmp_path):
  for args in (["train", "--config.rl.horizon=0"],
               ["train", "--config", "experiments/demo.py:smok"],
               ["design", "--config.checkpoint.every=0"]):
    out = _run(*args, "--workdir", str(tmp_path / "run"))
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: config"), args
    assert not (tmp_path / "run").exists()


def test_generate_reads_its_defaults_from_the_config():
  out = _run("generate", "--config", "nope.py", "--prompt", "hi")
  assert out.returncode == 2 and out.stderr.startswith("error: config file nope.py not found")
  out = _run("generate", "--prompt", "Name a movie.", "--config.llm.max_new_tokens=3")
  assert out.returncode == 0, out.stderr
  assert "[3 tokens, hit --max-new-tokens]" in out.stdout and "smollm2" in out.stdout
  assert "decode kernels: " in out.stdout  # The native kernels, or why XLA's.


def _one_line_error(out, start):
  lines = out.stderr.strip().splitlines()
  assert out.returncode == 2 and len(lines) == 1, out.stderr[-2000:]
  assert lines[0].startswith(f"error: {start}"), lines[0]


def test_a_misspelt_workdir_is_one_line_before_any_data_is_read(tmp_path):
  for command in (["train"], ["steer", "--movie", "Heat", "--user", "1"], ["design"]):
    out = _run(*command, "--config", "experiments/demo.py:smoke", "--workdir",
               str(tmp_path / "runz"))
    _one_line_error(out, f"{tmp_path / 'runz' / 'latent.json'} not found: run "
                    "`python -m eagle_jax prepare` first")
    assert not (tmp_path / "runz").exists()


def test_a_backend_the_machine_lacks_is_one_line():
  out = subprocess.run([sys.executable, "-m", "eagle_jax", "generate", "--prompt", "hi"],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "JAX_PLATFORMS": "nosuchbackend"})
  _one_line_error(out, "environment variable JAX_PLATFORMS='nosuchbackend': this machine "
                  "cannot start that backend")


def test_an_unwritable_export_target_is_one_line_at_once(tmp_path):
  (tmp_path / "a_file").write_text("")
  out = _run("export", "--workdir", str(tmp_path), "--out", str(tmp_path / "a_file" / "export"))
  _one_line_error(out, f"export directory {tmp_path / 'a_file' / 'export'}: cannot write in")
