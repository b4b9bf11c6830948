"""Atomic artefact writes and the run directory: a crash never leaves a half-written file.

Every artefact is written to a temporary sibling and renamed into place; a finished
artefact is reused on the next run (the run directory is the cache).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import shutil
import tempfile
from typing import Any, Iterator

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[pathlib.Path]:
  """Yields a temporary path in the target's folder; renames it onto `path` on success."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
  os.close(fd)
  tmp = pathlib.Path(tmp)
  os.chmod(tmp, 0o644)  # mkstemp's 0600 would make every artefact private to its writer.
  try:
    yield tmp
    os.replace(tmp, path)
  finally:
    tmp.unlink(missing_ok=True)


def replace_dir(staging: str | os.PathLike, path: str | os.PathLike) -> None:
  """Moves the finished directory `staging` onto `path`, replacing what was there (two
  renames: a crash between them leaves `path` absent, never a mix of old and new)."""
  staging, path = pathlib.Path(staging), pathlib.Path(path)
  old = path.with_name(f".{path.name}.old")
  shutil.rmtree(old, ignore_errors=True)
  if path.exists():
    os.replace(path, old)
  os.replace(staging, path)
  shutil.rmtree(old, ignore_errors=True)


def write_json(path, obj: Any) -> None:
  """Strict JSON: a NaN or infinity (an undefined statistic) is written as null, which
  every JSON reader accepts, not as the bare NaN only Python reads."""
  plain = _finite(json.loads(json.dumps(obj, default=_json_default)))
  with atomic_path(path) as tmp:
    tmp.write_text(json.dumps(plain, indent=2, sort_keys=True, allow_nan=False) + "\n")


def _finite(obj: Any) -> Any:
  if isinstance(obj, float):
    return obj if np.isfinite(obj) else None
  if isinstance(obj, dict):
    return {k: _finite(v) for k, v in obj.items()}
  if isinstance(obj, list):
    return [_finite(v) for v in obj]
  return obj


def read_json(path) -> Any:
  return json.loads(pathlib.Path(path).read_text())


def write_npz(path, **arrays) -> None:
  with atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})


def read_npz(path) -> dict[str, np.ndarray]:
  with np.load(path, allow_pickle=False) as z:
    return {k: z[k] for k in z.files}


def write_text(path, text: str) -> None:
  with atomic_path(path) as tmp:
    tmp.write_text(text)


def _json_default(obj):
  if isinstance(obj, (np.generic,)):
    return obj.item()
  if isinstance(obj, np.ndarray):
    return obj.tolist()
  if isinstance(obj, pathlib.Path):
    return str(obj)
  raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def fingerprint(*parts: Any) -> str:
  """A short stable hash of the inputs a stage depends on (configs, sources)."""
  blob = json.dumps(parts, sort_keys=True, default=str).encode()
  return hashlib.sha256(blob).hexdigest()[:16]


def stage_done(workdir, name: str, key: str) -> bool:
  """A stage is finished when its manifest (written last) exists with the same fingerprint."""
  manifest = pathlib.Path(workdir) / f"{name}.json"
  return manifest.is_file() and read_json(manifest).get("fingerprint") == key
