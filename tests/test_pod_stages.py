"""A pre-train stage in a 2-process jax.distributed job on 127.0.0.1: process 0 does the work
in the shared workdir, process 1 waits for it; host-local checkpoints in such a job."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

# Process 0 saves and restores alone while process 1 waits; then both read the checkpoint
# as `train` reads the reference.
_CHECKPOINT_WORKER = r"""
import json, sys
import jax, numpy as np
from jax.experimental import multihost_utils
from eagle_jax import distributed
from eagle_jax.run import checkpoint

assert distributed.initialize()
directory = sys.argv[1]
params = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
on_host = jax.NamedSharding(distributed.make_mesh(devices=jax.local_devices()), jax.P())
abstract = {"w": jax.ShapeDtypeStruct((2, 3), np.float32, sharding=on_host)}  # As load_reference.
alone = None
if distributed.is_main_process():
  with checkpoint.Checkpointer(directory, host_local=True) as ckpt:
    ckpt.save(3, params=params, opt_state={}, rng=jax.random.key(0), config_json={})
  leaf = checkpoint.restore_params(directory, host_local=True)["w"]  # No target: local devices.
  target = checkpoint.restore_params(directory, abstract, host_local=True)
  alone = {"w": np.asarray(leaf).tolist(), "target": np.asarray(target["w"]).tolist(),
           "local": leaf.sharding.device_set <= set(jax.local_devices())}
multihost_utils.sync_global_devices("saved")
together = checkpoint.restore_params(directory, abstract)
print("RESULT " + json.dumps({"process": jax.process_index(), "alone": alone,
                              "together": np.asarray(together["w"]).tolist()}), flush=True)
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _two_processes(args: list[str]) -> list[tuple[int, str]]:
  """Runs `python <args>` as processes 0 and 1 of one job with EAGLE_DISTRIBUTED=1 (2 CPU
  devices each); returns their exit statuses and outputs."""
  env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
  env.update(XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
             JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{_free_port()}", JAX_NUM_PROCESSES="2",
             EAGLE_DISTRIBUTED="1")
  procs = [subprocess.Popen([sys.executable, *args], env={**env, "JAX_PROCESS_ID": str(i)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  try:
    outputs = [p.communicate(timeout=120)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  return [(p.returncode, out) for p, out in zip(procs, outputs)]


def test_a_pre_train_stage_runs_on_process_zero_while_the_other_waits(tmp_path):
  workdir = tmp_path / "run"
  (rc0, out0), (rc1, out1) = _two_processes(
      ["-m", "eagle_jax", "prepare", "--config", "experiments/demo.py:smoke", "--workdir",
       str(workdir)])
  assert rc0 == 0, out0[-3000:]
  assert rc1 == 0, out1[-3000:]
  assert "prepared 138 movies" in out0 and "waiting" not in out0
  assert "process 1 of 2: `prepare` runs on process 0; waiting for it" in out1
  assert "process 1 of 2: process 0 finished `prepare`" in out1
  assert "latent space" not in out1 and "prepared" not in out1  # Process 1 did no work.
  for name in ("latent", "text", "ed_head"):
    assert (workdir / f"{name}.npz").is_file() and (workdir / f"{name}.json").is_file()


def test_a_failure_on_process_zero_fails_the_waiting_process(tmp_path):
  (rc0, out0), (rc1, out1) = _two_processes(
      ["-m", "eagle_jax", "prepare", "--config", "experiments/demo.py:smoke", "--workdir",
       str(tmp_path / "run"), "--descriptions", str(tmp_path / "nope.csv")])
  assert rc0 == 2 and "nope.csv: not found" in out0, out0[-3000:]
  assert rc1 == 2, out1[-3000:]
  # Gloo's C++ side may log its connection after our last line: only our lines are compared.
  ours = [line for line in out1.strip().splitlines() if not line.startswith("[Gloo]")]
  assert ours[-1] == "error: `prepare` failed on process 0 (exit status 1); its log says why"


def test_a_host_local_checkpoint_in_a_two_process_job(tmp_path):
  results = _two_processes(["-c", _CHECKPOINT_WORKER, str(tmp_path / "ckpt")])
  records = []
  for rc, out in results:
    assert rc == 0, out[-3000:]
    records.append(json.loads(next(l[7:] for l in out.splitlines() if l.startswith("RESULT "))))
  w = [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
  assert records[0]["alone"] == {"w": w, "target": w, "local": True}
  assert records[1]["alone"] is None
  assert [r["together"] for r in records] == [w, w]
