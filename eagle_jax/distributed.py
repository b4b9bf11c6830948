"""Multi-host setup, the device mesh, and placing data on it.

The same program runs on every host (`jax.distributed` is multi-controller). The mesh has
two axes: `data` (rows: episodes, prompts, text batches) and `model` (tensor parallelism for
the environment LLM: attention heads, MLP columns, vocabulary). Each host rolls out its own
episodes on a mesh of its local devices (`mesh_from_config(config, local=True)`), so every
result it reads back is addressable; `shard_batch` stitches the host-local rows into one
global batch on the global mesh's `data` axis, and the jitted update sees the global batch.
On one host every function here degenerates gracefully (no initialisation, local = global).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from eagle_jax.errors import EagleError

DATA_AXIS = "data"
MODEL_AXIS = "model"

# Beyond JAX_COORDINATOR_ADDRESS (read by JAX itself), JAX only detects the process count
# and index on known clusters (TPU pods, SLURM, Open MPI, ...). These two let a hand-made
# launch (e.g. two processes on one machine) say them too.
_NUM_PROCESSES_ENV = "JAX_NUM_PROCESSES"
_PROCESS_ID_ENV = "JAX_PROCESS_ID"
# How long the others wait for a silent process before the job fails (JAX's default: 100 s).
_HEARTBEAT_ENV = "EAGLE_HEARTBEAT_TIMEOUT_S"


def unusable_platform() -> str | None:
  """Why JAX_PLATFORMS names a backend this machine cannot start (JAX answers with an
  AssertionError or a long traceback), or None when it can or the variable is unset."""
  wanted = os.environ.get("JAX_PLATFORMS")
  if not wanted:
    return None
  try:
    jax.devices()
  except Exception as e:  # noqa: BLE001 - any failure to start is the answer.
    detail = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
    return (f"environment variable JAX_PLATFORMS={wanted!r}: this machine cannot start that "
            f"backend ({detail}); unset it to use what is available")
  return None


def _env_flag(name: str) -> bool | None:
  value = os.environ.get(name)
  if value is None or value == "":
    return None
  if value.lower() in ("1", "true", "yes"):
    return True
  if value.lower() in ("0", "false", "no"):
    return False
  raise EagleError(f"environment variable {name}={value!r}: expected 1/0 (or true/false)")


def _env_int(name: str) -> int | None:
  value = os.environ.get(name)
  if value is None:
    return None
  try:
    return int(value)
  except ValueError:
    raise EagleError(f"environment variable {name}={value!r}: expected an integer") from None


def initialize(enabled: bool | None = None) -> bool:
  """Joins the multi-host job when asked to; returns whether JAX runs distributed.

  Asked to by `enabled`, else by `EAGLE_DISTRIBUTED=1`, else by a set
  `JAX_COORDINATOR_ADDRESS`. Must run before anything touches a device. On a TPU pod or
  SLURM, JAX finds the coordinator and process ids itself; elsewhere set
  JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES and JAX_PROCESS_ID. A process that
  dies stops the job after EAGLE_HEARTBEAT_TIMEOUT_S seconds (default 100).
  """
  if enabled is None:
    enabled = _env_flag("EAGLE_DISTRIBUTED")
  if enabled is None:
    enabled = bool(os.environ.get("JAX_COORDINATOR_ADDRESS"))
  if not enabled:
    return False
  if jax.distributed.is_initialized():
    return True
  try:
    jax.distributed.initialize(num_processes=_env_int(_NUM_PROCESSES_ENV),
                               process_id=_env_int(_PROCESS_ID_ENV),
                               heartbeat_timeout_seconds=_env_int(_HEARTBEAT_ENV) or 100)
  except (ValueError, RuntimeError) as e:
    raise EagleError(
        f"jax.distributed.initialize failed: {e} (on a TPU pod or SLURM it needs no "
        f"settings; elsewhere set JAX_COORDINATOR_ADDRESS=host:port, {_NUM_PROCESSES_ENV} "
        f"and {_PROCESS_ID_ENV})") from e
  return True


def make_mesh(num_devices: int | None = None, devices=None, *, model: int = 1) -> Mesh:
  """A (data, model) mesh over the first `num_devices` of `devices` (default: all of them;
  `devices` default: every device of every process), `model` devices per model group. The
  one mesh builder.

  Auto axis types: the compiler propagates shardings (Explicit meshes reject some
  contractions over a sharded batch).
  """
  devices = list(devices or jax.devices())
  n = len(devices) if num_devices is None else num_devices
  if not 1 <= n <= len(devices):
    raise EagleError(f"mesh of {n} devices requested, but {len(devices)} are available")
  if model < 1 or n % model:
    raise EagleError(f"mesh of {n} devices: the model axis ({model}) must divide it")
  # Devices in the accelerator's physical order (as jax.make_mesh lays them), but free to
  # split a physical axis: jax.make_mesh cannot fit e.g. 8 x 2 on v6e's 4 x 4 chips.
  grid = mesh_utils.create_device_mesh((n // model, model), devices[:n],
                                       allow_split_physical_axes=True)
  return Mesh(grid, (DATA_AXIS, MODEL_AXIS), axis_types=(AxisType.Auto,) * 2)


def mesh_from_config(config, *, local: bool = False) -> Mesh:
  """The mesh of `config.mesh` (`data` x `model` devices; data -1: every device left).

  `local`: this process's devices only, with the same model axis: the mesh a host samples
  rollouts, embeds texts and runs the pre-training stages on. A config without a `mesh`
  section gets a pure data-parallel mesh.
  """
  section = config.get("mesh") or {}
  data, model = int(section.get("data", -1)), int(section.get("model", 1))
  devices = jax.local_devices() if local else jax.devices()
  if model < 1 or len(devices) % model:
    raise EagleError(f"config key mesh.model={model}: expected a divisor of the "
                     f"{len(devices)} {'local ' if local else ''}devices")
  if data == -1 or local:  # A host's rollouts use all of its devices.
    return make_mesh(len(devices), devices, model=model)
  if data < 1 or data * model > len(devices):
    raise EagleError(f"config keys mesh.data x mesh.model = {data} x {model}: expected -1 "
                     f"or at most {len(devices)} devices in all")
  return make_mesh(data * model, devices, model=model)


def shard_batch(mesh: Mesh, host_local_batch: Any) -> Any:
  """Assembles every host's rows into one global batch sharded on the `data` axis.

  Each host passes its own rows (the same number on every host); on one host this is just a
  sharded device_put. Works for any pytree of arrays with a leading batch dimension.
  """
  sharding = NamedSharding(mesh, P(DATA_AXIS))
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
      host_local_batch)


def replicate(mesh: Mesh, tree: Any) -> Any:
  """Places a pytree (params, optimizer state, typed PRNG keys) replicated on every mesh
  device, on every host; leaves already replicated on this mesh are kept as they are.

  Every host must pass the same values (e.g. params initialised from the same seed). Other
  leaves go through a host copy: a device array cannot be put directly onto devices of
  other hosts, and the copy never aliases the caller's buffers (safe to donate).
  """
  sharding = NamedSharding(mesh, P())

  def put(x):
    # Only an exact match is kept: an equivalent SingleDeviceSharding would make a jitted
    # update see a new input type on its second call, and recompile.
    if isinstance(x, jax.Array) and x.sharding == sharding:
      return x
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(put(jax.random.key_data(x)),
                                      impl=jax.random.key_impl(x))
    return jax.device_put(np.array(x), sharding)

  return jax.tree.map(put, tree)


def is_main_process() -> bool:
  """Whether this is process 0: the one that logs, prints and writes shared artefacts."""
  return jax.process_index() == 0


def process_rows(total: int) -> slice:
  """This process's contiguous share of `total` global rows: the episodes it rolls out and
  passes to `shard_batch` (which places process p's rows p-th on the `data` axis)."""
  count, index = jax.process_count(), jax.process_index()
  if total % count:
    raise EagleError(f"a global batch of {total} rows does not split over {count} processes "
                     "(set the batch size to a multiple of the process count)")
  per = total // count
  return slice(index * per, (index + 1) * per)


def mean_over_processes(values: dict[str, float]) -> dict[str, float]:
  """Each scalar averaged over the processes (each passes its own; on one process: as is)."""
  local = np.asarray([float(v) for v in values.values()], np.float32)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    local = np.asarray(multihost_utils.process_allgather(local)).mean(axis=0)
  return dict(zip(values, local.tolist()))
