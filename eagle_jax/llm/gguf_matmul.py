"""x times a weight matrix kept in its GGUF blocks (Q4_1, Q8_0): a native XLA:CPU kernel.

A decode step on a CPU is bound by the bytes of weights it reads. The packaged SmolLM2 GGUF
stores its matrices in 4-bit (Q4_1) and 8-bit (Q8_0) blocks that XLA cannot multiply, so the
decoder's float32 copy reads 5-6x more bytes per token than llama.cpp does. `gguf_matmul.cc`
multiplies the blocks directly (expanded in registers to the same float32 values), behind
XLA's FFI; the decoder uses it for its few-row decode products (`model.Linear`).

The kernel is compiled on first use with the system C++ compiler into the cache dir, keyed by
its source and jaxlib's version. Where that cannot happen (no compiler, not x86-64 with
AVX2/FMA/F16C) `unavailable_reason` says why and the decoder keeps XLA's products.
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

# GGUF block types the kernel reads: name -> bytes per block of 32 weights.
BLOCK_BYTES = {"Q4_1": 20, "Q8_0": 34}
BLOCK = 32
# The most activation rows it multiplies: beyond a decode batch, XLA's float32 GEMM is faster.
MAX_ROWS = 16
_TARGET = "eagle_gguf_matmul"
_SOURCE = "gguf_matmul.cc"
_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC", "-mavx2", "-mfma", "-mf16c")


def _source_text() -> str:
  from importlib import resources  # pylint: disable=g-import-not-at-top
  return resources.files("eagle_jax.llm").joinpath(_SOURCE).read_text()


def _build() -> str:
  """Compiles the kernel into the cache dir once; returns the shared library's path."""
  source = _source_text()
  key = hashlib.sha256("\0".join((source, jaxlib.__version__, *_FLAGS)).encode()).hexdigest()
  target = registry.cache_dir() / "kernels" / f"gguf_matmul-{key[:16]}.so"
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
  """None once the kernel is built and registered with XLA:CPU; else why it cannot be."""
  if platform.machine().lower() not in ("x86_64", "amd64"):
    return f"the native kernel is written for x86-64 (AVX2), this is {platform.machine()}"
  try:
    lib = ctypes.CDLL(_build())
  except OSError as e:
    return f"the native kernel could not be built: {e}"
  if not lib.EagleGgufMatmulSupported():
    return "this CPU lacks AVX2, FMA or F16C"
  jax.ffi.register_ffi_target(_TARGET, jax.ffi.pycapsule(lib.EagleGgufMatmul), platform="cpu")
  return None


def matmul(x: jax.Array, blocks: jax.Array) -> jax.Array:
  """x [..., K] float32 times the matrix [N, K] stored as blocks [N, K / 32, bytes] -> [..., N]."""
  reason = unavailable_reason()  # Builds and registers the kernel once.
  if reason is not None:
    raise EagleError(f"gguf_matmul: {reason}")
  n, num_blocks, _ = blocks.shape
  rows = x.reshape(-1, num_blocks * BLOCK).astype(jnp.float32)
  y = jax.ffi.ffi_call(_TARGET, jax.ShapeDtypeStruct((rows.shape[0], n), jnp.float32))(
      rows, blocks)
  return y.reshape(*x.shape[:-1], n)
