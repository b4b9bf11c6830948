"""The TPU launcher's dry run prints the whole pod lifecycle and runs nothing."""

import os
import subprocess


def test_dry_run_prints_every_gcloud_step():
  env = dict(os.environ, DRY_RUN="1", TPU_NAME="t1", ZONE="z1", ACCELERATOR="v5litepod-32",
             CONFIG="experiments/demo.py", PATH="/usr/bin:/bin")  # no gcloud on PATH is fine
  out = subprocess.run(["bash", "tpu/launch.sh"], capture_output=True, text=True, env=env,
                       timeout=30)
  assert out.returncode == 0, out.stderr
  lines = [l for l in out.stdout.splitlines() if l.startswith("+ gcloud")]
  assert [l.split()[5] for l in lines] == ["create", "scp", "ssh", "ssh", "scp", "delete"]
  assert "--accelerator-type=v5litepod-32" in lines[0]
  assert all("--worker=all" in l for l in lines[1:4])
  loop = lines[3]
  # Every stage of the loop, in order, on every worker; `train` as one multi-host program.
  stages = ["describe", "prepare", "actions", "design", "train-reference", "train"]
  assert f"for s in {' '.join(stages[:-1])}; do" in loop
  assert "EAGLE_DISTRIBUTED=1" in loop.split("done")[1] and "eagle_jax train" in loop
  assert loop.count("--config experiments/demo.py") == 2
  assert "--worker=0" in lines[4] and "eval.json" in lines[4]
