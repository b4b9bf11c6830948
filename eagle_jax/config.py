"""Loading `ml_collections` configs from `experiments/*.py` with `--config.a.b=value` overrides.

A config file defines `get_config(arg=None) -> ConfigDict`; `path.py:arg` passes `arg`
(big_vision style: one file holds the full run and its small variants).
"""

from __future__ import annotations

import ast
import importlib.util
import json
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
  try:
    config = module.get_config(arg) if arg else module.get_config()
  except Exception as e:  # E.g. an unknown variant: `demo.py:smok`.
    raise EagleError(f"config {spec}: get_config({arg!r}) failed: {type(e).__name__}: {e}") from e
  for override in overrides:
    apply_override(config, override)
  check_config(config)
  config.lock()
  return config


# Numeric keys and the values they accept, checked before any work starts: a bad value
# would otherwise fail late (after an ALS fit or a whole RL iteration) or pass silently.
_AT_LEAST_1 = (
    "als.dim", "als.iterations", "als.recall_k", "encoder.max_length", "encoder.batch_size",
    "encoder.head_steps", "describe.max_new_tokens", "describe.batch_size",
    "data.min_ratings_per_movie", "utility.k", "llm.max_new_tokens", "llm.batch_size",
    "actions.num_anchors", "design.subset_size", "design.max_iters", "reference.hidden",
    "reference.steps", "rl.horizon", "rl.iterations", "rl.batch_size", "checkpoint.every",
    "checkpoint.keep", "eval.episodes_per_pair", "eval.best_of_n")
_AT_LEAST_0 = (
    "seed", "data.num_tags", "actions.num_generic", "actions.num_personalised",
    "design.num_anchors", "encoder.head_hidden", "als.reg", "als.alpha",
    "encoder.head_weight_decay", "encoder.head_hidden_weight_decay", "utility.lam",
    "utility.cap", "llm.temperature", "llm.top_k", "reference.weight_decay", "rl.kl_coef",
    "rl.entropy_coef", "rl.value_coef", "profiles.num_liked", "profiles.num_disliked",
    "profiles.num_genres", "profiles.num_disliked_genres", "profiles.num_tags")
# Weight dtypes the environment LLM loads in (`llm.weights.resolve_dtype`); "auto" picks the
# backend's fastest.
LLM_DTYPES = ("auto", "float32", "bfloat16", "float16")
_ABOVE_0 = ("encoder.head_lr", "reference.lr", "rl.policy_lr", "rl.value_lr", "design.eps",
            "design.rejection_c", "rl.max_grad_norm")
_OPEN_FRACTION = ("als.test_fraction", "encoder.test_fraction", "actions.heldout_fraction")
_FRACTION = ("encoder.plot_weight", "rl.gamma", "rl.gae_lambda")
_RANGES = {
    **{k: (lambda v: v >= 1, "an integer >= 1") for k in _AT_LEAST_1},
    **{k: (lambda v: v >= 0, ">= 0") for k in _AT_LEAST_0},
    **{k: (lambda v: v > 0, "> 0") for k in _ABOVE_0},
    **{k: (lambda v: 0 < v < 1, "a fraction strictly between 0 and 1") for k in _OPEN_FRACTION},
    **{k: (lambda v: 0 <= v <= 1, "a value in [0, 1]") for k in _FRACTION},
    "reference.label_smoothing": (lambda v: 0 <= v < 1, "a value in [0, 1)"),
    "llm.top_p": (lambda v: 0 < v <= 1, "a value in (0, 1]"),
    "env.synthetic_rho": (lambda v: 0 < v <= 1, "a correlation in (0, 1]"),
    "llm.prompt_buckets": (lambda v: len(v) > 0 and all(b >= 1 for b in v),
                           "a non-empty sequence of token lengths >= 1"),
    "llm.dtype": (lambda v: v in LLM_DTYPES, f"one of {', '.join(LLM_DTYPES)}"),
}


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises a one-line EagleError naming the first key whose value is out of range, or a
  workdir that is a file.

  Keys a config does not define are skipped (a custom experiment may drop a section)."""
  workdir = pathlib.Path(config.get("workdir") or ".")
  if workdir.exists() and not workdir.is_dir():
    raise EagleError(f"config key workdir={str(workdir)!r}: is a file, expected a run directory "
                     "(or a path to create one at)")
  for key, (ok, expected) in _RANGES.items():
    node = config
    for part in key.split("."):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        break
      node = node[part]
    else:
      if not ok(node):
        raise EagleError(f"config key {key}={node!r}: expected {expected}")
  if "profiles" in config and config.profiles.dislike_threshold >= config.profiles.like_threshold:
    raise EagleError("config keys profiles.dislike_threshold < profiles.like_threshold: "
                     f"expected, got {config.profiles.dislike_threshold} >= "
                     f"{config.profiles.like_threshold}")
  if "actions" in config and config.actions.num_generic + config.actions.num_personalised < 1:
    raise EagleError("config keys actions.num_generic + actions.num_personalised: expected at "
                     "least one candidate action per anchor")


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


# Keys a resumed run may change: how long it runs, how often it saves, how it is evaluated,
# where the run folder is, which devices run it (checkpoints restore onto any mesh) and
# what `compile` checks. Any other change would splice two different runs together.
RESUMABLE = ("workdir", "rl.iterations", "checkpoint.", "eval.", "mesh.", "aot.")


def changed_keys(saved: dict, config: ml_collections.ConfigDict) -> list[str]:
  """`key: saved -> now` for every config value that differs from `saved` (the JSON of the
  config a checkpoint was written with), except the `RESUMABLE` keys."""
  now, before = flat_config(config), _flatten(saved)
  keep = lambda flat: {k: v for k, v in flat.items() if not k.startswith(RESUMABLE)}
  return diff(keep(before), keep(now))


def diff(before: dict, now: dict) -> list[str]:
  """`key: before -> now` for every key whose value differs."""
  return [f"{k}: {before.get(k, '(absent)')!r} -> {now.get(k, '(absent)')!r}"
          for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]


def flat_config(config: ml_collections.ConfigDict) -> dict:
  """{"section.key": value} in JSON types (tuples become lists, as a saved config has them)."""
  return _flatten(json.loads(config.to_json()))


def _flatten(tree: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[prefix + k] = v
  return out
