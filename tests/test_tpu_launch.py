"""The TPU launcher's dry run prints the whole pod lifecycle and runs nothing."""

import os
import shutil
import subprocess

import pytest

STAGES = ["describe", "prepare", "actions", "design", "train-reference", "train"]


def _launch(*command, **variables):
  env = dict(os.environ, PATH="/usr/bin:/bin", **variables)  # No gcloud on PATH is fine.
  for name in ("DRY_RUN", "BUCKET", "RUN", "KEEP", "SPOT", "EXTRA", "OVERRIDES", "PROJECT"):
    if name not in variables:
      env.pop(name, None)
  return subprocess.run(command or ["bash", "tpu/launch.sh"], capture_output=True, text=True,
                        env=env, timeout=30)


def test_dry_run_prints_every_step_with_every_stage_on_every_worker():
  out = _launch(DRY_RUN="1", BUCKET="gs://b1", RUN="r1", TPU_NAME="t1", ZONE="z1",
                ACCELERATOR="v5litepod-32", CONFIG="experiments/demo.py",
                OVERRIDES="--config.als.dim=16", EXTRA="--skip-eval")
  assert out.returncode == 0, out.stderr
  lines = [l for l in out.stdout.splitlines() if l.startswith("+ ")]
  gcloud = [l for l in lines if l.startswith("+ gcloud")]
  assert [l.split()[5] if "tpus" in l else l.split()[3] for l in gcloud] == (
      ["create", "scp", "ssh", "ssh"] + ["ssh"] * len(STAGES) + ["cp", "delete"])
  assert "--accelerator-type=v5litepod-32" in gcloud[0]
  assert all("--worker=all" in l for l in gcloud[1:4 + len(STAGES)])
  mount = gcloud[3]
  assert "gcsfuse --implicit-dirs" in mount and " b1 ~/eagle_runs" in mount
  for stage, line in zip(STAGES, gcloud[4:]):
    # Each stage on its own, on every worker, distributed, in the shared workdir.
    assert (f"EAGLE_DISTRIBUTED=1 .venv/bin/python -m eagle_jax {stage} --config "
            "experiments/demo.py --workdir ~/eagle_runs/r1 --config.als.dim=16") in line
    assert ("--resume --skip-eval" in line) == (stage == "train")
  fetch = gcloud[-2]
  assert fetch.endswith("gs://b1/r1/report.png gs://b1/r1/eval.json gs://b1/r1/metrics.jsonl "
                        "runs/tpu-report/")
  assert lines.index("+ mkdir -p runs/tpu-report") < lines.index(fetch)


def test_keep_skips_the_teardown_and_a_bucket_is_required():
  out = _launch(DRY_RUN="1", BUCKET="gs://b1", KEEP="1")
  assert out.returncode == 0 and "delete" not in out.stdout
  for bucket in (None, "b1", "gs://b1/runs"):
    out = _launch(**({"BUCKET": bucket} if bucket else {}))
    assert out.returncode == 2 and out.stdout == ""  # Nothing was run.
    assert out.stderr.startswith(f"error: BUCKET='{bucket or ''}': expected gs://NAME")


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.parametrize("target", ["tpu-dry-run", "tpu-train"])
def test_make_targets_dry_run(target):
  out = _launch("make", "-s", target, DRY_RUN="1", BUCKET="gs://b1")
  assert out.returncode == 0, out.stderr
  assert all(f"eagle_jax {stage} " in out.stdout for stage in STAGES)
  assert out.stdout.splitlines()[-1].startswith("+ gcloud compute tpus queued-resources delete")
