"""Batched, sharded sampling from the decoder: jitted prefill + one `lax.while_loop` decode.

The shape of the work is fixed so that compilations are few and reused:
  * prompts are left-padded to the smallest of a few length buckets, positions skip the
    padding (position = slot - pad_len), so every prompt of a bucket shares one program;
  * the KV cache has a static length (bucket + output buffer) and the output buffer a static
    size (max_new_tokens rounded up to `_BUFFER_MULTIPLE`); the real max_new_tokens is a
    dynamic loop bound;
  * the batch is padded to a power of two times the device count (at most `batch_size`)
    and sharded over the `data` mesh axis, params replicated;
  * the jitted phases are module-level with a static `_Program` (model config, strategy,
    pad/EOS ids, cache dtype, mesh), so every Sampler over the same model shape reuses them.
Per-row random keys are derived from the prompt's index in the caller's list, so a sampled
continuation does not depend on how prompts were sorted, batched or sharded.

Log-probs are those of the sampled tokens under the model's untempered, unfiltered
distribution (log_softmax of the raw logits): the quantity a policy-gradient or a
likelihood score needs, independent of the decoding strategy.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import time
import warnings
from typing import Any, Protocol, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from eagle_jax import distributed
from eagle_jax.errors import EagleError
from eagle_jax.llm import model as model_lib
from eagle_jax.llm import prompting

# The output buffer is rounded up to this many tokens: nearby max_new_tokens share a program.
_BUFFER_MULTIPLE = 32


# ----------------------------------------------------------------------------- strategies


class Strategy(Protocol):
  """Maps one row of fp32 logits [V] and a PRNG key to a token id (unbatched, vmapped)."""

  def __call__(self, logits: jax.Array, key: jax.Array) -> jax.Array:
    ...


@dataclasses.dataclass(frozen=True)
class Greedy:
  """Argmax decoding (the key is ignored)."""

  def __call__(self, logits: jax.Array, key: jax.Array) -> jax.Array:
    del key
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)


@dataclasses.dataclass(frozen=True)
class Temperature:
  """Samples from softmax(logits / temperature), optionally restricted by top-k then top-p.

  top_k=0 and top_p=1.0 disable the filters (as in HF: temperature, then top-k, then top-p).
  """

  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0

  def __post_init__(self):
    if not self.temperature > 0:
      raise EagleError(f"temperature must be > 0 (use Greedy for 0), got {self.temperature}")
    if self.top_k < 0:
      raise EagleError(f"top_k must be >= 0 (0 disables it), got {self.top_k}")
    if not 0.0 < self.top_p <= 1.0:
      raise EagleError(f"top_p must be in (0, 1], got {self.top_p}")

  def __call__(self, logits: jax.Array, key: jax.Array) -> jax.Array:
    logits = logits.astype(jnp.float32) / self.temperature
    keep = jnp.ones(logits.shape, bool)
    if self.top_k:
      top = jax.lax.top_k(logits, self.top_k)[0]  # Sorted: the nucleus needs no full sort.
      keep &= logits >= top[-1]
      if self.top_p < 1.0:
        keep &= logits >= top[_nucleus_size(top, self.top_p) - 1]
    elif self.top_p < 1.0:
      keep &= top_p_mask(logits, self.top_p)
    return jax.random.categorical(key, jnp.where(keep, logits, -jnp.inf)).astype(jnp.int32)


def top_k_mask(logits: jax.Array, k: int) -> jax.Array:
  """True for the k largest logits [V] (ties at the k-th value are all kept)."""
  kth = jax.lax.top_k(logits, min(k, logits.shape[-1]))[0][-1]
  return logits >= kth


def _nucleus_size(sorted_logits: jax.Array, p: float) -> jax.Array:
  """How many of the descending `sorted_logits` form the nucleus: a token is kept while the
  mass strictly before it is < p, so the token that crosses p (and the argmax) is kept."""
  probs = jax.nn.softmax(sorted_logits)
  return jnp.sum(jnp.cumsum(probs) - probs < p)


def top_p_mask(logits: jax.Array, p: float) -> jax.Array:
  """True for the smallest set of top tokens whose probability mass reaches p (nucleus).

  This sorts the whole vocabulary; with a top-k filter in front, `Temperature` takes the
  nucleus inside the k sorted survivors instead, which on CPU is several times cheaper.
  """
  sorted_logits = -jnp.sort(-logits)
  return logits >= sorted_logits[_nucleus_size(sorted_logits, p) - 1]


def make_strategy(temperature: float, top_k: int = 0, top_p: float = 1.0) -> Strategy:
  """temperature 0 -> Greedy; otherwise Temperature (the config and CLI entry point)."""
  if temperature == 0:
    return Greedy()
  return Temperature(float(temperature), int(top_k), float(top_p))


# ------------------------------------------------------------------------------ outputs


@dataclasses.dataclass
class SampleOutput:
  """Continuations in the caller's prompt order, plus timing for benchmarks.

  token_ids/logprobs exclude the EOS token and anything cut by a stop string; `finished`
  is True when a sequence hit EOS or a stop string (False: it ran into max_new_tokens).
  """

  texts: list[str]
  token_ids: list[list[int]]
  logprobs: list[np.ndarray]
  prompt_lengths: list[int]
  num_generated: list[int]
  finished: list[bool]
  prefill_s: float = 0.0
  decode_s: float = 0.0
  prompt_tokens: int = 0  # Real (unpadded) prompt tokens prefilled.
  tokens: int = 0  # Tokens produced by the decode loop for real prompts (EOS included).


@flax.struct.dataclass
class _DecodeState:
  step: jax.Array  # [] number of tokens generated so far (= next buffer column).
  tokens: jax.Array  # [B, N] int32 output buffer, pad after EOS.
  logprobs: jax.Array  # [B, N] f32, 0 after EOS.
  last: jax.Array  # [B] the token generated at step - 1 (input of the next model call).
  done: jax.Array  # [B] hit EOS, or a batch-padding row.
  pad_len: jax.Array  # [B] left padding of the prompt (slots < pad_len are never attended).
  keys: jax.Array  # [B] per-row PRNG keys.
  cache: Any


# ----------------------------------------------------------------------- jitted phases

# Incremented while tracing only: how many programs each phase compiled (tests, benchmarks).
TRACE_COUNTS: collections.Counter = collections.Counter()


@dataclasses.dataclass(frozen=True)
class _Program:
  """Everything static that shapes the compiled phases: samplers that agree share programs."""

  config: Any  # ModelConfig
  strategy: Strategy
  pad_id: int
  eos_ids: tuple[int, ...]
  dtype: np.dtype  # KV cache dtype.
  mesh: jax.sharding.Mesh

  def constrain(self, state: _DecodeState) -> _DecodeState:
    """Batch dims on the `data` axis, the step counter replicated."""
    batched, replicated = NamedSharding(self.mesh, P("data")), NamedSharding(self.mesh, P())
    shardings = jax.tree.map(lambda x: replicated if x.ndim == 0 else batched, state)
    return jax.lax.with_sharding_constraint(state, shardings)

  def step(self, state: _DecodeState, logits: jax.Array) -> _DecodeState:
    """Samples from logits [B, V] into buffer column `state.step`; done rows get pad, 0."""
    step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(state.keys, state.step)
    tokens = jax.vmap(self.strategy)(logits, step_keys)
    logprobs = jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[:, None], axis=-1)[:, 0]
    tokens = jnp.where(state.done, self.pad_id, tokens)
    logprobs = jnp.where(state.done, 0.0, logprobs)
    eos = jnp.asarray(self.eos_ids or (-1,), jnp.int32)
    return self.constrain(state.replace(
        step=state.step + 1,
        tokens=jax.lax.dynamic_update_slice(state.tokens, tokens[:, None], (0, state.step)),
        logprobs=jax.lax.dynamic_update_slice(state.logprobs, logprobs[:, None], (0, state.step)),
        last=tokens,
        done=state.done | jnp.isin(tokens, eos)))


@functools.partial(jax.jit, static_argnames=("program", "cache_length", "buffer_len"))
def _prefill(params, tokens, pad_len, active, keys, *, program: _Program, cache_length: int,
             buffer_len: int) -> _DecodeState:
  """Runs the left-padded prompts [B, P] through the model and samples the first token."""
  TRACE_COUNTS["prefill"] += 1
  batch, length = tokens.shape
  slots = jnp.arange(length)
  positions = jnp.maximum(slots[None, :] - pad_len[:, None], 0)
  cache_slots = jnp.arange(cache_length)
  # Pad queries attend to nothing; the model's finite mask value keeps them NaN-free.
  attn_mask = ((cache_slots[None, None, :] <= slots[None, :, None])
               & (cache_slots[None, None, :] >= pad_len[:, None, None]))
  cache = model_lib.init_cache(program.config, batch, cache_length, program.dtype)
  last = jnp.full((batch, 1), length - 1, jnp.int32)  # Only the last position needs logits.
  logits, cache = model_lib.apply(params, program.config, tokens, positions, cache,
                                  jnp.int32(0), attn_mask, logits_at=last)
  state = _DecodeState(
      step=jnp.int32(0),
      tokens=jnp.full((batch, buffer_len), program.pad_id, jnp.int32),
      logprobs=jnp.zeros((batch, buffer_len), jnp.float32),
      last=jnp.full((batch,), program.pad_id, jnp.int32),
      done=~active, pad_len=pad_len, keys=keys, cache=cache)
  return program.step(state, logits[:, -1])


@functools.partial(jax.jit, static_argnames=("program",), donate_argnums=(1,))
def _decode(params, state: _DecodeState, max_new_tokens, *, program: _Program) -> _DecodeState:
  """Generates until every row is done or max_new_tokens (dynamic) were produced."""
  TRACE_COUNTS["decode"] += 1
  cache_length = jax.tree.leaves(state.cache)[0].shape[1]
  prompt_length = cache_length - state.tokens.shape[1]
  cache_slots = jnp.arange(cache_length)

  def cond(s: _DecodeState):
    return (s.step < max_new_tokens) & ~jnp.all(s.done)

  def body(s: _DecodeState):
    slot = prompt_length + s.step - 1  # Cache slot of `s.last`.
    positions = (slot - s.pad_len)[:, None]
    attn_mask = ((cache_slots[None, :] >= s.pad_len[:, None])
                 & (cache_slots[None, :] <= slot))[:, None, :]
    logits, cache = model_lib.apply(params, program.config, s.last[:, None], positions,
                                    s.cache, slot, attn_mask)
    return program.step(s.replace(cache=cache), logits[:, 0])

  return jax.lax.while_loop(cond, body, state)


# ------------------------------------------------------------------------------ sampler


class Sampler:
  """Samples continuations of text prompts from a `LoadedModel`, batched and sharded.

  Prompts longer than the biggest bucket are truncated from the left (keeping BOS) with a
  warning: the end of a prompt holds the instruction and the generation header, and an RL
  run should not die on one long description.
  """

  def __init__(self, model, *, buckets: Sequence[int] = (128, 256, 512), batch_size: int = 16,
               mesh: jax.sharding.Mesh | None = None):
    if not buckets or min(buckets) < 1:
      raise EagleError(f"prompt buckets must be positive lengths, got {tuple(buckets)}")
    self.model = model
    self.mesh = mesh if mesh is not None else distributed.make_mesh()
    self.num_devices = self.mesh.devices.size
    self.buckets = tuple(sorted(set(int(b) for b in buckets)))
    self.batch_size = _round_up(max(1, batch_size), self.num_devices)
    tok = model.tokenizer
    self.pad_id = int(tok.pad_token_id if tok.pad_token_id is not None
                      else (model.eos_ids[0] if model.eos_ids else 0))
    leaves = jax.tree.leaves(model.params)
    self.dtype = np.dtype(max(leaves, key=lambda x: x.size).dtype)  # The embedding's dtype.
    self._batched = NamedSharding(self.mesh, P("data"))
    self.params = jax.device_put(model.params, NamedSharding(self.mesh, P()))

  def _program(self, strategy: Strategy) -> _Program:
    return _Program(self.model.config, strategy, self.pad_id, tuple(self.model.eos_ids),
                    self.dtype, self.mesh)

  # -- host ---------------------------------------------------------------------------

  def encode(self, text: str) -> list[int]:
    """Token ids of a (templated) prompt, with BOS prepended when the model wants it."""
    ids = self.model.tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = self.model.bos_id
    if self.model.add_bos and bos is not None and (not ids or ids[0] != bos):
      ids = [bos] + ids
    return ids

  def _fit(self, ids: list[int], index: int) -> list[int]:
    limit = self.buckets[-1]
    if not ids:
      raise EagleError(f"prompt {index} is empty after tokenisation")
    if len(ids) <= limit:
      return ids
    warnings.warn(f"prompt {index} has {len(ids)} tokens, more than the largest bucket "
                  f"{limit}: keeping its last tokens", stacklevel=3)
    keep_bos = self.model.add_bos and ids[0] == self.model.bos_id
    return ids[:1] + ids[len(ids) - limit + 1:] if keep_bos else ids[len(ids) - limit:]

  def _bucket(self, length: int) -> int:
    return next(b for b in self.buckets if b >= length)

  def _rows(self, n: int) -> int:
    """Padded batch size: devices x a power of two, at most batch_size (few programs)."""
    rows = self.num_devices
    while rows < n:
      rows *= 2
    return min(rows, self.batch_size)

  def _plan(self, ids: list[list[int]]) -> list[tuple[int, list[int]]]:
    """(bucket, prompt indices) batches: sorted by length so buckets fill, <= batch_size."""
    order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
    batches = []
    for i in order:
      bucket = self._bucket(len(ids[i]))
      if batches and batches[-1][0] == bucket and len(batches[-1][1]) < self.batch_size:
        batches[-1][1].append(i)
      else:
        batches.append((bucket, [i]))
    return batches

  def _run_batch(self, ids: list[list[int]], bucket: int, buffer_len: int, keys: jax.Array,
                 program: _Program, max_new_tokens: int, timing: collections.Counter):
    """Prefill + decode of one left-padded batch; returns its tokens and log-probs [n, steps]."""
    rows = self._rows(len(ids))
    tokens = np.full((rows, bucket), self.pad_id, np.int32)
    pad_len = np.full((rows,), bucket, np.int32)  # Batch-padding rows: all pad, done at once.
    for r, row_ids in enumerate(ids):
      pad_len[r] = bucket - len(row_ids)
      tokens[r, pad_len[r]:] = row_ids
    active = np.arange(rows) < len(ids)
    args = jax.device_put((tokens, pad_len, active, keys), self._batched)
    start = time.perf_counter()
    state = jax.block_until_ready(_prefill(
        self.params, *args, program=program, cache_length=bucket + buffer_len,
        buffer_len=buffer_len))
    timing["prefill_s"] += time.perf_counter() - start
    start = time.perf_counter()
    state = jax.block_until_ready(_decode(self.params, state, max_new_tokens, program=program))
    timing["decode_s"] += time.perf_counter() - start
    steps = int(state.step)
    return (np.asarray(state.tokens)[:len(ids), :steps],
            np.asarray(state.logprobs)[:len(ids), :steps])

  def sample(self, prompts: Sequence[str], *, max_new_tokens: int, strategy: Strategy,
             seed: int = 0, stop: Sequence[str] = (), apply_template: bool = True,
             progress: bool = False) -> SampleOutput:
    """Samples one continuation per prompt (chat-templated when the model has a template)."""
    if max_new_tokens < 1:
      raise EagleError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    prompts = list(prompts)
    if apply_template:
      prompts = [prompting.format_prompt(self.model, p) for p in prompts]
    ids = [self._fit(self.encode(p), i) for i, p in enumerate(prompts)]
    buffer_len = _round_up(max_new_tokens, _BUFFER_MULTIPLE)
    program = self._program(strategy)
    seed_key = jax.random.key(seed)
    generated: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    timing = collections.Counter()
    for bucket, members in tqdm.tqdm(self._plan(ids), desc="sampling", unit="batch",
                                     disable=not progress):
      # Row keys from the caller's prompt index: batching does not change the samples.
      rows = self._rows(len(members))
      indices = jnp.asarray(members + [0] * (rows - len(members)))
      keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(seed_key, indices)
      tokens, logprobs = self._run_batch([ids[i] for i in members], bucket, buffer_len, keys,
                                         program, max_new_tokens, timing)
      for r, i in enumerate(members):
        generated[i] = tokens[r], logprobs[r]

    out = SampleOutput([], [], [], [], [], [], prefill_s=timing["prefill_s"],
                       decode_s=timing["decode_s"], prompt_tokens=sum(map(len, ids)))
    for i in range(len(ids)):
      text, token_ids, logprobs, finished, produced = self._postprocess(*generated[i], stop)
      out.texts.append(text)
      out.token_ids.append(token_ids)
      out.logprobs.append(logprobs)
      out.prompt_lengths.append(len(ids[i]))
      out.num_generated.append(len(token_ids))
      out.finished.append(finished)
      out.tokens += produced
    return out

  def _postprocess(self, tokens: np.ndarray, logprobs: np.ndarray, stop: Sequence[str]):
    """Cuts at the first EOS, decodes, then cuts text and tokens at the first stop string."""
    eos_at = np.flatnonzero(np.isin(tokens, self.model.eos_ids or ()))
    produced = int(eos_at[0]) + 1 if eos_at.size else len(tokens)
    finished = bool(eos_at.size)
    ids = [int(t) for t in tokens[:produced - finished]]
    decode = functools.partial(self.model.tokenizer.decode, skip_special_tokens=True)
    text = decode(ids)
    cut = min((c for c in (text.find(s) for s in stop if s) if c >= 0), default=-1)
    if cut >= 0:
      text, finished = text[:cut], True
      # Keep the longest token prefix whose text lies before the stop string.
      lo, hi = 0, len(ids)
      while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(decode(ids[:mid])) <= cut:
          lo = mid
        else:
          hi = mid - 1
      ids = ids[:lo]
    return text, ids, logprobs[:len(ids)].copy(), finished, produced


def _round_up(x: int, multiple: int) -> int:
  return -(-x // multiple) * multiple
