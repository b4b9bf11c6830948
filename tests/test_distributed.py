"""Mesh helpers in-process, and a real 2-process jax.distributed job on 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from eagle_jax import distributed
from eagle_jax.errors import EagleError
from tests.fakes import flat_params, rl_problem

# Each process: 2 fake CPU devices, 2 local rows; rows of process p are p*100 + [0..5].
_WORKER = r"""
import json
import numpy as np
from eagle_jax import distributed

assert distributed.initialize()  # From JAX_COORDINATOR_ADDRESS / _NUM_PROCESSES / _PROCESS_ID.
import jax
from jax.sharding import NamedSharding, PartitionSpec as P

mesh = distributed.make_mesh()
local = np.arange(6, dtype=np.float32).reshape(2, 3) + 100 * jax.process_index()
batch = distributed.shard_batch(mesh, {"x": local})
params = distributed.replicate(mesh, {"w": np.array([1.0, 2.0, 3.0], np.float32)})
replicated = NamedSharding(mesh, P())
stats = jax.jit(lambda p, b: {"sum": b["x"].sum(), "mean": b["x"].mean(),
                              "row_sums": b["x"].sum(axis=1), "dot": (b["x"] @ p["w"]).mean()},
                out_shardings=replicated)(params, batch)
stats = jax.block_until_ready(stats)
print("RESULT " + json.dumps({
    "process": jax.process_index(), "processes": jax.process_count(),
    "local_devices": jax.local_device_count(), "devices": jax.device_count(),
    "main": distributed.is_main_process(), "global_shape": list(batch["x"].shape),
    **{k: np.asarray(v).tolist() for k, v in stats.items()}}), flush=True)

# The sharded RL update over both hosts: each passes its half of the episodes.
from eagle_jax.agent import rl
from tests.fakes import flat_params, rl_problem
cfg, params, episodes, optimizer = rl_problem()
rows = len(episodes.chosen) // 2
mine = jax.tree.map(lambda x: x[rows * jax.process_index():][:rows], episodes)
state = rl.TrainState.create(distributed.replicate(mesh, params), optimizer,
                             distributed.replicate(mesh, jax.random.key(0)))
train_step = rl.make_train_step(optimizer, cfg, mesh)
state, metrics = train_step(state, distributed.shard_batch(mesh, mine))
print("PARAMS " + json.dumps({"params": flat_params(state.params).tolist(),
                              "loss": float(metrics["loss"])}), flush=True)
jax.distributed.shutdown()
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_run():
  """Runs _WORKER as processes 0 and 1 of one job; returns their RESULT and PARAMS records."""
  port = _free_port()
  env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
  env.update(XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
             JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2")
  env.pop("EAGLE_DISTRIBUTED", None)
  procs = [subprocess.Popen([sys.executable, "-c", _WORKER], env={**env, "JAX_PROCESS_ID": str(i)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  outputs = []
  try:
    for p in procs:
      outputs.append(p.communicate(timeout=120)[0])
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  results, updates = [], []
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
    lines = out.splitlines()
    results.append(json.loads(next(l[7:] for l in lines if l.startswith("RESULT "))))
    updates.append(json.loads(next(l[7:] for l in lines if l.startswith("PARAMS "))))
  return results, updates


def test_two_processes_assemble_one_global_batch(two_process_run):
  results, _ = two_process_run
  rows = np.concatenate([np.arange(6.0).reshape(2, 3), 100 + np.arange(6.0).reshape(2, 3)])
  for i, r in enumerate(sorted(results, key=lambda r: r["process"])):
    assert (r["process"], r["processes"], r["local_devices"], r["devices"]) == (i, 2, 2, 4)
    assert r["main"] == (i == 0)
    assert r["global_shape"] == [4, 3]
    assert r["sum"] == rows.sum() == 630.0
    assert r["mean"] == pytest.approx(52.5)
    assert r["row_sums"] == rows.sum(axis=1).tolist()
    assert r["dot"] == pytest.approx((rows @ np.array([1.0, 2.0, 3.0])).mean())


def test_two_process_update_equals_the_single_process_update(two_process_run):
  """The update over 2 hosts x 2 devices equals the same update on 4 local CPU devices."""
  if jax.default_backend() != "cpu" or jax.device_count() < 4:
    pytest.skip("needs 4 CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)")
  _, updates = two_process_run
  from eagle_jax.agent import rl
  cfg, params, episodes, optimizer = rl_problem()
  mesh = distributed.make_mesh(4)
  state = rl.TrainState.create(params, optimizer, jax.random.key(0))
  state, metrics = rl.make_train_step(optimizer, cfg, mesh)(
      state, distributed.shard_batch(mesh, episodes))
  expected = flat_params(state.params)
  assert np.abs(expected - flat_params(params)).max() > 1e-3  # The update moved the params.
  for update in updates:
    np.testing.assert_allclose(update["params"], expected, atol=1e-5, rtol=1e-5)
    assert update["loss"] == pytest.approx(float(metrics["loss"]), rel=1e-5)


def test_initialize_is_off_unless_asked(monkeypatch):
  monkeypatch.delenv("EAGLE_DISTRIBUTED", raising=False)
  monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
  assert distributed.initialize() is False
  monkeypatch.setenv("EAGLE_DISTRIBUTED", "0")
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1")
  assert distributed.initialize() is False  # The explicit flag wins over the coordinator.
  assert distributed.initialize(enabled=False) is False
  monkeypatch.setenv("EAGLE_DISTRIBUTED", "maybe")
  with pytest.raises(EagleError, match="EAGLE_DISTRIBUTED='maybe'"):
    distributed.initialize()


def test_mesh_and_placement_on_one_process():
  n = jax.device_count()
  mesh = distributed.make_mesh()
  assert mesh.axis_names == ("data", "model") and dict(mesh.shape) == {"data": n, "model": 1}
  assert mesh.axis_types == (jax.sharding.AxisType.Auto,) * 2
  assert distributed.make_mesh(1).devices.size == 1
  with pytest.raises(EagleError, match=f"mesh of {n + 1} devices requested"):
    distributed.make_mesh(n + 1)
  batch = distributed.shard_batch(mesh, {"x": np.arange(2 * n * 3).reshape(2 * n, 3)})
  assert batch["x"].sharding.spec == jax.sharding.PartitionSpec("data")
  assert len(batch["x"].addressable_shards) == n
  assert batch["x"].addressable_shards[-1].data.shape == (2, 3)
  np.testing.assert_array_equal(batch["x"], np.arange(2 * n * 3).reshape(2 * n, 3))
  tree = distributed.replicate(mesh, {"w": np.ones(3), "key": jax.random.key(3)})
  assert tree["w"].sharding.is_fully_replicated and tree["key"].sharding.is_fully_replicated
  assert distributed.is_main_process()


def test_mesh_from_config_splits_data_and_model():
  import ml_collections
  n = jax.device_count()
  config = ml_collections.ConfigDict({"mesh": {"data": -1, "model": 2}})
  if n % 2:
    pytest.skip("needs an even device count")
  assert dict(distributed.mesh_from_config(config).shape) == {"data": n // 2, "model": 2}
  local = distributed.mesh_from_config(config, local=True)
  assert set(local.devices.flat) == set(jax.local_devices())
  config.mesh.data = 1
  assert dict(distributed.mesh_from_config(config).shape) == {"data": 1, "model": 2}
  assert dict(distributed.mesh_from_config(ml_collections.ConfigDict()).shape) == {
      "data": n, "model": 1}
  config.mesh.model = n + 1
  with pytest.raises(EagleError, match=f"mesh.model={n + 1}: expected a divisor"):
    distributed.mesh_from_config(config)
  config.mesh.model, config.mesh.data = 1, n + 1
  with pytest.raises(EagleError, match="mesh.data x mesh.model"):
    distributed.mesh_from_config(config)
  assert distributed.process_rows(8) == slice(0, 8)  # One process holds every row.
