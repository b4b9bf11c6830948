"""Loading `ml_collections` configs from `experiments/*.py` with `--config.a.b=value` overrides.

A config file defines `get_config(arg=None) -> ConfigDict`; `path.py:arg` passes `arg`
(big_vision style: one file holds the full run and its small variants).
"""

from __future__ import annotations

import ast
import importlib.util
import pathlib

import ml_collections

from eagle_jax.errors import EagleError


def load_config(spec: str, overrides: list[str] = ()) -> ml_collections.ConfigDict:
  """Loads `file.py[:arg]` and applies `key.path=value` overrides (types are kept)."""
  path_str, _, arg = spec.partition(":")
  path = pathlib.Path(path_str)
  if not path.is_file():
    raise EagleError(f"config file {path} not found (expected a Python file with get_config())")
  module_spec = importlib.util.spec_from_file_location(f"_eagle_config_{path.stem}", path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except Exception as e:  # A config file is user code: report where it broke.
    raise EagleError(f"config file {path} failed to load: {type(e).__name__}: {e}") from e
  if not hasattr(module, "get_config"):
    raise EagleError(f"config file {path} defines no get_config()")
  config = module.get_config(arg) if arg else module.get_config()
  for override in overrides:
    apply_override(config, override)
  config.lock()
  return config


def apply_override(config: ml_collections.ConfigDict, override: str) -> None:
  """Applies one `a.b.c=value` override; the value is parsed as a Python literal."""
  key, sep, raw = override.partition("=")
  if not sep:
    raise EagleError(f"config override {override!r} is not of the form key.path=value")
  *parents, leaf = key.split(".")
  node = config
  for i, part in enumerate(parents):
    if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
      raise _unknown_key(".".join(parents[: i + 1]), node)
    node = node[part]
  if leaf not in node:
    raise _unknown_key(key, node)
  old = node[leaf]
  value = _parse_value(raw, old, key)
  with node.unlocked():
    node[leaf] = value


def _parse_value(raw: str, old, key: str):
  try:
    value = ast.literal_eval(raw)
  except (ValueError, SyntaxError):
    value = raw  # Bare words are strings: --config.llm.model=smollm2.
  if old is None or value is None:
    return value
  if isinstance(old, bool) != isinstance(value, bool):
    raise EagleError(f"config key {key}: expected a bool, got {raw!r}")
  if isinstance(old, float) and isinstance(value, int):
    return float(value)
  if isinstance(old, (tuple, list)) and isinstance(value, (tuple, list)):
    return type(old)(value)
  if type(old) is not type(value):
    raise EagleError(f"config key {key}: expected {type(old).__name__}, got {raw!r}")
  return value


def _unknown_key(key: str, node: ml_collections.ConfigDict) -> EagleError:
  known = ", ".join(sorted(node.keys()))
  return EagleError(f"unknown config key {key!r} (known here: {known})")
