"""`python -m eagle_jax <command>`: the EAGLE loop, one command per stage.

Each command lives in the module that owns its stage and is imported lazily, so
`--help` is instant and a stage's heavy dependencies load only when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from eagle_jax.commands import COMMANDS
from eagle_jax.errors import EagleError

def _add_config_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--config", default="experiments/demo.py",
                      help="config file, optionally `file.py:variant` (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m eagle_jax",
      description="EAGLE: steer a frozen LLM into high-utility regions of a latent space.",
      epilog="Config values are overridden with --config.section.key=value, e.g. "
             "--config.als.dim=16. Unknown keys are an error.")
  sub = parser.add_subparsers(dest="command", required=True, metavar="command")
  for name, (target, help_text) in COMMANDS.items():
    module_name = target.partition(":")[0]
    cmd = sub.add_parser(name, help=help_text, description=help_text)
    _add_config_args(cmd)
    # Command modules keep heavy imports inside functions, so importing them is cheap.
    add_args = getattr(importlib.import_module(module_name), "add_args", None)
    if add_args:
      add_args(cmd)
    cmd.set_defaults(_target=target)
  return parser


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
  """Separates `--config.a.b=v` overrides from the ordinary arguments."""
  overrides, rest = [], []
  it = iter(argv)
  for arg in it:
    if arg.startswith("--config."):
      if "=" in arg:
        overrides.append(arg[len("--config."):])
      else:
        value = next(it, None)
        if value is None:
          raise EagleError(f"{arg} needs a value")
        overrides.append(f"{arg[len('--config.'):]}={value}")
    else:
      rest.append(arg)
  return overrides, rest


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  # transformers serves only tokenizers here: its "PyTorch was not found" advice is noise.
  os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
  try:
    overrides, rest = split_overrides(argv)
    args = build_parser().parse_args(rest)
    args.overrides = overrides
    module_name, _, func_name = args._target.partition(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return func(args) or 0
  except EagleError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except Exception:
    from eagle_jax.distributed import unusable_platform
    reason = unusable_platform()  # JAX's own answer to a bad backend is a deep traceback.
    if reason is None:
      raise
    print(f"error: {reason}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("interrupted: finished artefacts are kept; re-run to continue", file=sys.stderr)
    return 130
