"""Shape and flavour of a decoder-only LM: one frozen dataclass for every supported family.

Llama, SmolLM2, Qwen2 (qkv bias) and Qwen3 (QK-norm) are `arch="llama"` with flags; Gemma 3
is `arch="gemma3"` (offset norms, sandwich norms, local/global layers). The config is hashable
so it can be a static `jax.jit` argument: every field is a scalar, a string or a tuple.
"""

from __future__ import annotations

import dataclasses

ARCHS = ("llama", "gemma3")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Hyper-parameters of the decoder; see `eagle_jax.llm.model` for how each is used."""

  arch: str
  vocab_size: int
  dim: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  ffn_dim: int
  rope_base: float = 10000.0
  # Llama-3 style ("rope_type", "llama3"), ("factor", 8.0), ... or ("rope_type", "linear"), ...
  # as sorted (key, value) pairs, so the config stays hashable.
  rope_scaling: tuple | None = None
  norm_eps: float = 1e-5
  tie_embeddings: bool = True
  qkv_bias: bool = False
  qk_norm: bool = False
  # Gemma 3: layer i is global when (i + 1) % sliding_window_pattern == 0, else local.
  sliding_window: int | None = None
  sliding_window_pattern: int = 0
  rope_local_base: float = 10000.0
  query_pre_attn_scalar: float | None = None
  embed_scale: bool = False
  act: str = "silu"

  def __post_init__(self):
    if self.arch not in ARCHS:
      raise ValueError(f"arch {self.arch!r} is not supported; expected one of {ARCHS}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads "
                       f"{self.num_kv_heads}")
    if self.act not in ("silu", "gelu_tanh"):
      raise ValueError(f"act {self.act!r} is not supported; expected 'silu' or 'gelu_tanh'")

  @property
  def offset_norms(self) -> bool:
    """Gemma stores RMSNorm weights w and scales by (1 + w)."""
    return self.arch == "gemma3"

  def is_local(self, layer: int) -> bool:
    """Whether `layer` attends only within the sliding window (Gemma 3 local layers)."""
    if self.sliding_window is None or self.sliding_window_pattern <= 0:
      return False
    return (layer + 1) % self.sliding_window_pattern != 0

  @property
  def attn_scale(self) -> float:
    scalar = self.query_pre_attn_scalar or self.head_dim
    return float(scalar) ** -0.5

  @classmethod
  def tiny(cls, arch: str = "llama") -> ModelConfig:
    """A few-layer random model for unit tests: GQA everywhere, gemma3 also windowed."""
    if arch == "llama":
      return cls(arch="llama", vocab_size=300, dim=32, num_layers=2, num_heads=4,
                 num_kv_heads=2, head_dim=8, ffn_dim=64, rope_base=10000.0,
                 tie_embeddings=False, qkv_bias=True, qk_norm=True)
    if arch == "gemma3":
      return cls(arch="gemma3", vocab_size=300, dim=32, num_layers=4, num_heads=4,
                 num_kv_heads=1, head_dim=16, ffn_dim=64, rope_base=1e6, norm_eps=1e-6,
                 qk_norm=True, sliding_window=4, sliding_window_pattern=2,
                 rope_local_base=10000.0, query_pre_attn_scalar=16.0, embed_scale=True,
                 act="gelu_tanh")
    raise ValueError(f"arch {arch!r} is not supported; expected one of {ARCHS}")
