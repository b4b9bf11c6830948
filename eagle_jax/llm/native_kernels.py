"""Native XLA:CPU kernels for a decode step's products, where XLA's own are slow.

- `matmul(x, blocks)`: x times a weight matrix kept in its GGUF blocks (Q4_1, Q8_0). A decode
  step on a CPU is bound by the bytes of weights it reads, and the decoder's float32 copy reads
  5-6x more than the GGUF's blocks. The kernel expands each block to the same float32 values
  gguf-py dequantises it to. Used by `model.Linear` and the LM head for products of at most
  `MAX_ROWS` rows (decode steps; prefill chunks keep XLA's GEMM).
- `attention_scores(q, keys)` and `attention_values(probs, values)`: attention over the KV
  cache, batched over (row, KV head). XLA:CPU runs each as one tiny GEMM per pair, which was
  half of a batch-32 decode step. Used by `model.Attention` in decode steps.

They are compiled from `native_kernels.cc` on first use with the system C++ compiler into the
cache dir, keyed by the source, the flags and jaxlib's version. Where that cannot happen (no
compiler, not x86-64 with AVX2/FMA/F16C) `unavailable_reason` says why and the decoder keeps
XLA's products. The kernels change only the order in which products are summed.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import platform
import shutil
import subprocess

import jax
import jax.numpy as jnp
import jaxlib

from eagle_jax.errors import EagleError
from eagle_jax.llm import registry
from eagle_jax.run.artifacts import atomic_path

# GGUF block types `matmul` reads: name -> bytes per block of 32 weights.
BLOCK_BYTES = {"Q4_1": 20, "Q8_0": 34}
BLOCK = 32
# The most activation rows `matmul` takes: beyond a decode batch, XLA's float32 GEMM is
# faster (30 SmolLM2 layers at 64 rows: 115 against 148 ms; at 128: 264 against 236 ms).
MAX_ROWS = 64
# Attention's head dim must be a multiple of this (AVX2 float32 lanes).
LANES = 8
# FFI target -> the handler symbol in the library.
_TARGETS = {"eagle_gguf_matmul": "EagleGgufMatmul",
            "eagle_attention_scores": "EagleAttentionScores",
            "eagle_attention_values": "EagleAttentionValues"}
_SOURCE = "native_kernels.cc"
_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-mavx2", "-mfma", "-mf16c")


def _source_text() -> str:
  from importlib import resources  # pylint: disable=g-import-not-at-top
  return resources.files("eagle_jax.llm").joinpath(_SOURCE).read_text()


def _build() -> str:
  """Compiles the kernels into the cache dir once; returns the shared library's path."""
  source = _source_text()
  key = hashlib.sha256("\0".join((source, jaxlib.__version__, *_FLAGS)).encode()).hexdigest()
  target = registry.cache_dir() / "kernels" / f"native_kernels-{key[:16]}.so"
  if target.is_file():  # Renamed into place whole, so a present file is complete.
    return str(target)
  compiler = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
  if compiler is None:
    raise OSError("no C++ compiler (c++, g++ or clang++) on PATH")
  with atomic_path(target) as tmp:
    src = tmp.with_suffix(".cc")
    src.write_text(source)
    try:
      out = subprocess.run([compiler, *_FLAGS, f"-I{jax.ffi.include_dir()}", str(src), "-o",
                            str(tmp)], capture_output=True, text=True, timeout=300)
    finally:
      src.unlink(missing_ok=True)
    if out.returncode:
      raise OSError(f"{compiler} failed to build {_SOURCE}: {out.stderr.strip()[:2000]}")
  return str(target)


@functools.cache
def unavailable_reason() -> str | None:
  """None once the kernels are built and registered with XLA:CPU; else why they cannot be."""
  if platform.machine().lower() not in ("x86_64", "amd64"):
    return f"the native kernels are written for x86-64 (AVX2), this is {platform.machine()}"
  try:
    lib = ctypes.CDLL(_build())
  except OSError as e:
    return f"the native kernels could not be built: {e}"
  if not lib.EagleNativeKernelsSupported():
    return "this CPU lacks AVX2, FMA or F16C"
  for target, symbol in _TARGETS.items():
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
  return None


def _call(target: str, shape: tuple[int, ...], *args: jax.Array) -> jax.Array:
  reason = unavailable_reason()  # Builds and registers the kernels once.
  if reason is not None:
    raise EagleError(f"{target}: {reason}")
  return jax.ffi.ffi_call(target, jax.ShapeDtypeStruct(shape, jnp.float32))(*args)


def matmul(x: jax.Array, blocks: jax.Array) -> jax.Array:
  """x [..., K] times the matrix [N, K] stored as blocks [N, K / 32, bytes] -> float32 [..., N]."""
  n, num_blocks, _ = blocks.shape
  rows = x.reshape(-1, num_blocks * BLOCK).astype(jnp.float32)
  y = _call("eagle_gguf_matmul", (rows.shape[0], n), rows, blocks)
  return y.reshape(*x.shape[:-1], n)


def _check_lanes(name: str, cache: jax.Array) -> None:
  if cache.shape[-1] % LANES:
    raise EagleError(f"{name}: the head dim must be a multiple of {LANES}, got {cache.shape}")


def attention_scores(q: jax.Array, keys: jax.Array) -> jax.Array:
  """q [P, G, D] (G queries per KV head) times keys [P, T, D] -> float32 scores [P, G, T]."""
  _check_lanes("attention_scores", keys)
  return _call("eagle_attention_scores", (*q.shape[:2], keys.shape[1]),
               q.astype(jnp.float32), keys.astype(jnp.float32))


def attention_values(probs: jax.Array, values: jax.Array) -> jax.Array:
  """probs [P, G, T] times values [P, T, D] -> float32 outputs [P, G, D]."""
  _check_lanes("attention_values", values)
  return _call("eagle_attention_values", (*probs.shape[:2], values.shape[2]),
               probs.astype(jnp.float32), values.astype(jnp.float32))
