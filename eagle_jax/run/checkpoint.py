"""Checkpoints: one Orbax `CheckpointManager` behind a small class; nothing else imports Orbax.

Each step directory holds separate items, so a reader can restore only what it needs:

  params     StandardSave   network params (e.g. {"policy": ..., "value": ...})
  opt_state  StandardSave   optax state
  rng        StandardSave   {"key_data": jax.random.key_data(key)} (typed keys are not
                            serialisable; the key is rewrapped on restore)
  meta       JsonSave       {"step", "rng_impl", "extra"}
  config     JsonSave       the run's config as a dict

Saving is asynchronous (the device-to-host copy blocks, the write does not); every process
of a multi-host job must call save/restore (Orbax synchronises them), unless the
Checkpointer is `host_local`: then the calling process alone reads and writes (process 0
saving a pre-train stage's checkpoint while the others wait for it). Restoring takes
abstract trees (`jax.eval_shape` + target shardings), so a checkpoint written on one
topology is read on another. A step Orbax cannot read raises an EagleError naming its
directory, or falls back to the previous step when asked.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
from typing import Any, Mapping, NamedTuple

import jax
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec as P

from eagle_jax import distributed
from eagle_jax.errors import EagleError

_ARRAY_ITEMS = ("params", "opt_state", "rng")
_JSON_ITEMS = ("meta", "config")


class Restored(NamedTuple):
  """A restored step; array items not asked for in `abstract_state` are None."""

  step: int
  params: Any
  opt_state: Any
  rng: jax.Array | None
  config: dict
  extra: dict
  skipped: tuple[str, ...] = ()  # why each newer unreadable step was passed over (fallback)


def _item_handlers(multiprocessing: ocp.options.MultiprocessingOptions
                   ) -> dict[str, ocp.CheckpointHandler]:
  handlers = {name: ocp.StandardCheckpointHandler(multiprocessing_options=multiprocessing)
              for name in _ARRAY_ITEMS}
  handlers.update({name: ocp.JsonCheckpointHandler(multiprocessing_options=multiprocessing)
                   for name in _JSON_ITEMS})
  return handlers


def _abstract_key_data(abstract_key: Any) -> jax.ShapeDtypeStruct:
  """The uint32 key-data struct of an abstract typed key, keeping its target sharding."""
  data = jax.eval_shape(jax.random.key_data, abstract_key)
  return jax.ShapeDtypeStruct(data.shape, data.dtype,
                              sharding=getattr(abstract_key, "sharding", None))


def _multiprocessing(host_local: bool) -> ocp.options.MultiprocessingOptions:
  """Orbax's default (every process takes part), or this process alone as its own primary."""
  if not host_local:
    return ocp.options.MultiprocessingOptions()
  index = jax.process_index()
  return ocp.options.MultiprocessingOptions(primary_host=index, active_processes={index})


def _replicated_structs(metadata: Any, devices=None) -> Any:
  """Abstract arrays from Orbax array metadata, replicated over `devices` (default: every
  device of every process)."""
  replicated = NamedSharding(distributed.make_mesh(devices=devices), P())
  return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=replicated),
                      metadata)


def _first_line(error: BaseException) -> str:
  text = str(error).strip().splitlines()
  return f"{type(error).__name__}: {text[0][:300] if text else ''}"


class Checkpointer:
  """Saves and restores training state under `directory/<step>/`, keeping the last N.

  `host_local`: this process alone calls save/restore (no synchronisation with the other
  processes of the job) and restores without a target onto its own devices.
  """

  def __init__(self, directory, *, max_to_keep: int = 3, save_interval_steps: int = 1,
               host_local: bool = False):
    self.directory = pathlib.Path(directory).absolute()
    self.host_local = host_local
    multiprocessing = _multiprocessing(host_local)
    if host_local:  # Orbax's `create` needs every process.
      self.directory.mkdir(parents=True, exist_ok=True)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, save_interval_steps=save_interval_steps,
        enable_async_checkpointing=True, create=not host_local,
        multiprocessing_options=multiprocessing)
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_handlers=_item_handlers(multiprocessing))

  def save(self, step: int, *, params: Any, opt_state: Any, rng: jax.Array,
           config_json: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> bool:
    """Starts saving `step` (returns at once); False if the save interval skips it.

    `rng` is a typed PRNG key; `config_json` and `extra` must be JSON-serialisable. An
    `opt_state` without arrays (None, {}: a finished network) is not stored.
    """
    meta = {"step": int(step), "rng_impl": str(jax.random.key_impl(rng)),
            "extra": dict(extra or {})}
    key_data = jax.random.key_data(rng)
    if self.host_local and jax.process_count() > 1:
      # Orbax refuses this process's device arrays in a multi-process job: host copies.
      params, opt_state, key_data = jax.device_get((params, opt_state, key_data))
    items = {
        "params": ocp.args.StandardSave(params),
        "rng": ocp.args.StandardSave({"key_data": key_data}),
        "meta": ocp.args.JsonSave(meta),
        "config": ocp.args.JsonSave(dict(config_json)),
    }
    if jax.tree.leaves(opt_state):  # Orbax rejects an empty tree.
      items["opt_state"] = ocp.args.StandardSave(opt_state)
    return self._manager.save(int(step), args=ocp.args.Composite(**items))

  def restore(self, abstract_state: Mapping[str, Any], step: int | None = None,
              fallback: bool = False) -> Restored:
    """Restores `step` (default: the latest) into the shapes and shardings of
    `abstract_state`, a mapping with any of "params", "opt_state" (trees of
    `jax.ShapeDtypeStruct`, e.g. from `jax.eval_shape`) and "rng" (an abstract typed key).

    A step that cannot be read raises an EagleError naming its directory; with
    `fallback=True` the next older step is tried instead, and the result's `skipped` says
    why each newer one was passed over.
    """
    unknown = set(abstract_state) - set(_ARRAY_ITEMS)
    if unknown:
      raise EagleError(f"restore: unknown checkpoint items {sorted(unknown)} "
                       f"(expected some of {list(_ARRAY_ITEMS)})")
    self._manager.reload()  # Another process (or a crash) may have changed the directory.
    steps = sorted(self._manager.all_steps(), reverse=True)
    if not steps:
      raise EagleError(f"no checkpoint in {self.directory}")
    if step is None:
      step = steps[0]
    elif step not in steps:
      raise EagleError(f"checkpoint step {step} not in {self.directory} "
                       f"(available: {sorted(steps)})")
    skipped = []
    for candidate in (s for s in steps if s <= step):
      try:
        return self._restore_step(abstract_state, candidate)._replace(skipped=tuple(skipped))
      except Exception as e:  # Orbax/tensorstore/json raise many types for a damaged step.
        error = EagleError(
            f"checkpoint {self.directory / str(candidate)} cannot be restored "
            f"(truncated, corrupt, or saved from a different state structure): "
            f"{_first_line(e)}")
        if not fallback:
          raise error from e
        skipped.append(str(error))
    raise EagleError(f"no readable checkpoint in {self.directory} at or before step {step}")

  def _restore_step(self, abstract_state: Mapping[str, Any], step: int) -> Restored:
    items = {name: ocp.args.JsonRestore() for name in _JSON_ITEMS}
    for name in ("params", "opt_state"):
      if name in abstract_state:
        items[name] = ocp.args.StandardRestore(abstract_state[name])
    if "rng" in abstract_state:
      items["rng"] = ocp.args.StandardRestore(
          {"key_data": _abstract_key_data(abstract_state["rng"])})
    restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    meta = restored["meta"]
    rng = None
    if "rng" in abstract_state:
      rng = jax.random.wrap_key_data(restored["rng"]["key_data"], impl=meta["rng_impl"])
    return Restored(step=meta["step"], params=restored.get("params"),
                    opt_state=restored.get("opt_state"), rng=rng,
                    config=restored["config"], extra=meta["extra"])

  def set_aside(self, step: int, folder) -> pathlib.Path:
    """Moves step `step` out of the manager's directory into `folder` (kept for a post
    mortem; a later save of the same step must not meet it)."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / str(step)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(self.directory / str(step), target)
    self._manager.reload()
    return target

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def abstract_params(self, step: int) -> Any:
    """The saved params' shapes and dtypes, replicated over all devices (a host-local
    Checkpointer: this process's devices); no target needed."""
    return _replicated_structs(self._manager.item_metadata(step)["params"],
                               jax.local_devices() if self.host_local else None)

  def wait(self) -> None:
    """Blocks until every pending asynchronous save is on disk."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves and releases the manager."""
    self._manager.close()

  def __enter__(self) -> Checkpointer:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def restore_params(directory, abstract_params: Any | None = None, *,
                   host_local: bool = False) -> Any:
  """The params of the latest step of a checkpoint directory, or of an `export_params`
  directory, in the shapes of `abstract_params` (None: the saved shapes, replicated).
  `host_local`: read by this process alone (see `Checkpointer`)."""
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    raise EagleError(f"checkpoint {directory} not found")
  if not any(p.name.isdigit() for p in directory.iterdir()):  # An export.
    return load_exported(directory, abstract_params, host_local=host_local)
  with Checkpointer(directory, host_local=host_local) as ckpt:
    step = ckpt.latest_step()
    if abstract_params is None:
      abstract_params = ckpt.abstract_params(step)
    return ckpt.restore({"params": abstract_params}, step).params


def export_params(checkpoint_dir, step: int | None, out_dir) -> pathlib.Path:
  """Writes the params of a training checkpoint (default: latest step) as a small
  params-only Orbax checkpoint for inference; returns its directory."""
  out_dir = pathlib.Path(out_dir).absolute()
  try:  # Checked first: Orbax retries an unwritable target for minutes before it fails.
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tempfile.TemporaryFile(dir=out_dir.parent).close()
  except OSError as e:
    raise EagleError(f"export directory {out_dir}: cannot write in {out_dir.parent} "
                     f"({e.strerror})") from e
  checkpoint_dir = pathlib.Path(checkpoint_dir).absolute()
  if not checkpoint_dir.is_dir():
    raise EagleError(f"checkpoint directory {checkpoint_dir} not found")
  with Checkpointer(checkpoint_dir) as checkpointer:
    if step is None:
      step = checkpointer.latest_step()
      if step is None:
        raise EagleError(f"no checkpoint in {checkpoint_dir}")
    if step not in checkpointer.all_steps():
      raise EagleError(f"checkpoint step {step} not in {checkpoint_dir} "
                       f"(available: {checkpointer.all_steps()})")
    params = checkpointer.restore({"params": checkpointer.abstract_params(step)}, step).params
  # Orbax writes into a temporary directory and renames it: never a half-written export.
  with ocp.StandardCheckpointer() as exporter:
    exporter.save(out_dir, params, force=True)
  return out_dir


def load_exported(out_dir, abstract_params: Any | None = None, *,
                  host_local: bool = False) -> Any:
  """Loads params written by `export_params` into the shapes/shardings of `abstract_params`
  (None: the saved shapes, replicated over all devices; `host_local`: read by this process
  alone, onto its own devices)."""
  out_dir = pathlib.Path(out_dir).absolute()
  if not out_dir.is_dir():
    raise EagleError(f"exported params {out_dir} not found (write them with export_params)")
  with ocp.StandardCheckpointer(multiprocessing_options=_multiprocessing(host_local)) as loader:
    try:
      if abstract_params is None:
        abstract_params = _replicated_structs(loader.metadata(out_dir).item_metadata,
                                              jax.local_devices() if host_local else None)
      return loader.restore(out_dir, abstract_params)
    except Exception as e:  # As in Checkpointer.restore: many error types for one cause.
      raise EagleError(f"exported params {out_dir} cannot be restored (truncated, corrupt, or "
                       f"a different params structure): {_first_line(e)}") from e
