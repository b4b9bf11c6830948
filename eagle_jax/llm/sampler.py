"""Batched, sharded sampling from the decoder: continuous batching over a static KV cache.

A `sample` call pours its prompts through B slots (a power of two times the `data` axis, at
most `batch_size`, sharded over the `data` mesh axis; weights and KV cache split over the
`model` axis as `partitioning` says):
  * a slot holds one prompt from cache slot 0, so its positions are its slots and rows need
    no alignment; the decode `lax.while_loop` writes each row at its own slot;
  * the loop hands back to the host when a quarter of the slots have finished: their outputs
    are read and the next prompts are admitted into those slots (continuous batching), so a
    long list runs at near full occupancy instead of waiting for each batch's longest row;
  * prompts are prefilled in fixed chunks, and prompts that share a token prefix (one state
    and K actions) prefill it once and start from a copy of its cache (`shared_prefixes`);
  * shapes are static (slots, cache = largest prompt bucket + output buffer rounded up to
    `_BUFFER_MULTIPLE`, chunk, admission size) and the jitted phases are module-level with a
    static `_Program` (model config, strategy, pad/EOS ids, cache dtype, mesh), so a run
    compiles each phase once and every Sampler over the same model shape reuses them.
Per-row random keys are derived from the prompt's index in the caller's list and folded with
the row's own token count, so a sampled continuation does not depend on how prompts were
ordered, batched, refilled or sharded.

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
from eagle_jax.llm import native_kernels
from eagle_jax.llm import model as model_lib
from eagle_jax.llm import partitioning
from eagle_jax.llm import prompting
from eagle_jax.llm.weights import with_blocks

# The output buffer is rounded up to this many tokens: nearby max_new_tokens share a program.
_BUFFER_MULTIPLE = 32
# Prompt tokens per prefill call (a fixed chunk: one program whatever the prompt lengths).
PREFILL_CHUNK = 64


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
  prompt_tokens: int = 0  # Real (unpadded) prompt tokens.
  prefill_tokens: int = 0  # Tokens run through prefill: a shared prefix counts once.
  tokens: int = 0  # Tokens produced by the decode loop for real prompts (EOS included).


@flax.struct.dataclass
class _Slots:
  """The decode batch: B slots, each continuing one prompt (or empty, then `done`).

  Row r's prompt fills cache slots [0, length) from slot 0 and each generated token is
  written at the next slot, so a row's position is its slot and rows need no alignment: a
  finished row is refilled with a new prompt while the others keep decoding.
  """

  length: jax.Array  # [B] cache slots in use; `last` is written at this slot next.
  count: jax.Array  # [B] tokens generated (= next buffer column).
  tokens: jax.Array  # [B, N] int32 output buffer, pad after EOS.
  logprobs: jax.Array  # [B, N] f32, 0 after EOS.
  last: jax.Array  # [B] the newest token, input of the next model call.
  done: jax.Array  # [B] hit EOS or max_new_tokens, or an empty slot.
  keys: jax.Array  # [B, 2] uint32 per-row PRNG key data.
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
  native: bool = False  # Decode attention in `native_kernels`.

  def constrain(self, tree):
    """Rows (the leading axis) on the `data` axis when they divide over it, else replicated
    (a single-row prefix cache); KV caches (the only 4-D leaves) also split heads over
    `model`."""
    rows = jax.tree.leaves(tree)[0].shape[0] % self.mesh.shape[distributed.DATA_AXIS] == 0

    def spec(x):
      if x.ndim == 4:
        return partitioning.cache_spec(x.shape, self.mesh, rows)
      return P(distributed.DATA_AXIS) if rows else P()
    return jax.tree.map(
        lambda x: jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, spec(x))), tree)

  def sample(self, logits: jax.Array, keys: jax.Array, count: jax.Array):
    """Tokens and their log-probs [k] from logits [k, V]; row keys folded with its count, so a
    row's draws do not depend on which slot or batch it ran in."""
    step_keys = jax.vmap(jax.random.fold_in)(jax.random.wrap_key_data(keys), count)
    tokens = jax.vmap(self.strategy)(logits, step_keys)
    logprobs = jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[:, None], axis=-1)[:, 0]
    return tokens, logprobs

  def finished(self, tokens: jax.Array, count: jax.Array, max_new_tokens) -> jax.Array:
    eos = jnp.asarray(self.eos_ids or (-1,), jnp.int32)
    return jnp.isin(tokens, eos) | (count >= max_new_tokens)


@functools.partial(jax.jit, static_argnames=("program", "rows", "cache_length", "buffer"))
def _empty(*, program: _Program, rows: int, cache_length: int, buffer: int) -> _Slots:
  """`rows` empty slots (done, so the decode loop skips them)."""
  zeros = jnp.zeros((rows,), jnp.int32)
  return program.constrain(_Slots(
      length=zeros, count=zeros, tokens=jnp.full((rows, buffer), program.pad_id, jnp.int32),
      logprobs=jnp.zeros((rows, buffer), jnp.float32), last=zeros,
      done=jnp.ones((rows,), bool), keys=jnp.zeros((rows, 2), jnp.uint32),
      cache=model_lib.init_cache(program.config, rows, cache_length, program.dtype)))


@functools.partial(jax.jit, static_argnames=("program",))
def _stack(caches: tuple, *, program: _Program):
  """The [k, T] cache that k prompts start from (a row per prompt: its shared prefix's, or
  any row when it has none) and zero last-token logits [k, V]."""
  cache = jax.tree.map(lambda *rows: jnp.concatenate(rows), *caches)
  logits = jnp.zeros((len(caches), program.config.vocab_size), jnp.float32)
  return program.constrain((cache, logits))


@functools.partial(jax.jit, static_argnames=("program",), donate_argnums=(1, 5))
def _extend(params, cache, start, tokens, lengths, last_logits, has_last, *, program: _Program):
  """Prefills one chunk: tokens [k, C] (row r's first lengths[r] are real) at slots start[r]..

  Returns the cache and last_logits [k, V], replaced by this chunk's logits at the row's
  last real token where has_last[r] (the prompt's end lies in this chunk).
  """
  TRACE_COUNTS["prefill"] += 1
  chunk = tokens.shape[1]
  cache_length = jax.tree.leaves(cache)[0].shape[2]
  positions = start[:, None] + jnp.arange(chunk)
  attn_mask = jnp.arange(cache_length)[None, None, :] <= positions[:, :, None]
  at = jnp.clip(lengths - 1, 0, chunk - 1)[:, None]  # Only the last token needs logits.
  logits, cache = model_lib.apply(params, program.config, tokens, positions, cache, start,
                                  attn_mask, logits_at=at, native=program.native)
  return program.constrain((cache, jnp.where(has_last[:, None], logits[:, 0], last_logits)))


@functools.partial(jax.jit, static_argnames=("program",), donate_argnums=(0,))
def _admit(state: _Slots, cache, last_logits, slots, length, keys, max_new_tokens, *,
           program: _Program) -> _Slots:
  """Starts prefilled prompts in `slots` (an index past the batch drops that row): samples
  their first token and replaces the slot's cache row, buffer and counters."""
  TRACE_COUNTS["admit"] += 1
  count = jnp.zeros_like(length)
  first, logprob = program.sample(last_logits, keys, count)
  buffer = state.tokens.shape[1]
  put = lambda old, new: old.at[slots].set(new, mode="drop")
  first_column = jnp.arange(buffer) == 0
  state = state.replace(
      length=put(state.length, length), count=put(state.count, count + 1),
      tokens=put(state.tokens, jnp.where(first_column, first[:, None], program.pad_id)),
      logprobs=put(state.logprobs, jnp.where(first_column, logprob[:, None], 0.0)),
      last=put(state.last, first),
      done=put(state.done, program.finished(first, count + 1, max_new_tokens)),
      keys=put(state.keys, keys),
      cache=jax.tree.map(put, state.cache, cache))
  return program.constrain(state)


@functools.partial(jax.jit, static_argnames=("program",), donate_argnums=(1,))
def _decode(params, state: _Slots, max_new_tokens, until_done, *, program: _Program) -> _Slots:
  """Generates until `until_done` rows are done (slots to refill) or all are."""
  TRACE_COUNTS["decode"] += 1
  cache_slots = jnp.arange(jax.tree.leaves(state.cache)[0].shape[2])
  columns = jnp.arange(state.tokens.shape[1])

  def cond(s: _Slots):
    return ~jnp.all(s.done) & (jnp.sum(s.done) < until_done)

  def body(s: _Slots):
    attn_mask = (cache_slots[None, :] <= s.length[:, None])[:, None, :]
    logits, cache = model_lib.apply(params, program.config, s.last[:, None], s.length[:, None],
                                    s.cache, s.length, attn_mask, native=program.native)
    tokens, logprobs = program.sample(logits[:, 0], s.keys, s.count)
    active = ~s.done
    write = active[:, None] & (columns[None, :] == s.count[:, None])
    step = active.astype(jnp.int32)
    return program.constrain(s.replace(
        length=s.length + step, count=s.count + step,
        tokens=jnp.where(write, tokens[:, None], s.tokens),
        logprobs=jnp.where(write, logprobs[:, None], s.logprobs),
        last=jnp.where(active, tokens, s.last),
        done=s.done | program.finished(tokens, s.count + 1, max_new_tokens), cache=cache))

  return jax.lax.while_loop(cond, body, state)


# ------------------------------------------------------------------------------ sampler


def shared_prefixes(ids: Sequence[Sequence[int]], min_shared: int) -> tuple[list[int], list[int]]:
  """Which prompts share a token prefix, to prefill it once (one state, K actions).

  Returns (order, prefix): the prompt indices sorted so prompts with a common prefix are
  adjacent (lexicographic order of their ids), and for each prompt the length of the prefix
  its group shares. Groups are runs of neighbours sharing >= min_shared tokens; a run ends
  where the next prompt would halve what it shares, and a neighbour sharing twice as much
  starts a new one, so one loosely related prompt does not cut a state's K prompts down to
  the chat header. A prompt alone shares nothing, and always keeps its last token out of the
  prefix (its logits start the answer).
  """
  order = sorted(range(len(ids)), key=lambda i: (list(ids[i]), i))
  prefix = [0] * len(ids)

  def close(run, shared):
    for i in run:
      prefix[i] = shared if len(run) > 1 else 0

  run, shared = order[:1], 0
  for i in order[1:]:
    a, b = ids[run[-1]], ids[i]
    common = next((n for n, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    common = min(common, len(a) - 1, len(b) - 1)
    if len(run) > 1 and common >= 2 * shared:  # The last two share far more: split them off.
      close(run[:-1], shared)
      run, shared = [run[-1], i], common
    elif common >= min_shared and (len(run) == 1 or 2 * common >= shared):
      run.append(i)
      shared = common if len(run) == 2 else min(shared, common)
    else:
      close(run, shared)
      run, shared = [i], 0
  close(run, shared)
  return order, prefix


class Sampler:
  """Samples continuations of text prompts from a `LoadedModel`, batched and sharded.

  Prompts longer than the biggest bucket are truncated from the left (keeping BOS) with a
  warning: the end of a prompt holds the instruction and the generation header, and an RL
  run should not die on one long description.
  """

  def __init__(self, model, *, buckets: Sequence[int] = (128, 256, 512), batch_size: int = 16,
               mesh: jax.sharding.Mesh | None = None,
               prefill_chunk: int = PREFILL_CHUNK, native_kernels: bool = True):
    if not buckets or min(buckets) < 1:
      raise EagleError(f"prompt buckets must be positive lengths, got {tuple(buckets)}")
    if prefill_chunk < 1:
      raise EagleError(f"prefill_chunk must be >= 1, got {prefill_chunk}")
    self.model = model
    # Default: this host's devices, so every result it reads back is addressable.
    self.mesh = mesh if mesh is not None else distributed.make_mesh(devices=jax.local_devices())
    self.data_shards = self.mesh.shape[distributed.DATA_AXIS]
    self.buckets = tuple(sorted(set(int(b) for b in buckets)))
    self.batch_size = _round_up(max(1, batch_size), self.data_shards)
    self.prefill_chunk = prefill_chunk
    tok = model.tokenizer
    self.pad_id = int(tok.pad_token_id if tok.pad_token_id is not None
                      else (model.eos_ids[0] if model.eos_ids else 0))
    leaves = jax.tree.leaves(model.params)
    self.dtype = np.dtype(max(leaves, key=lambda x: x.size).dtype)  # The embedding's dtype.
    # None when decode steps run in `native_kernels` (attention; products too where the model
    # has GGUF blocks); else why they cannot.
    self.native_reason = self._native_reason(native_kernels)
    params = model.params
    if self.native_reason is None:
      params = with_blocks(params, model.blocks)
    self.params = jax.device_put(params, partitioning.param_shardings(params, self.mesh))

  def _native_reason(self, wanted: bool) -> str | None:
    if not wanted:
      return "native kernels are off (llm.native_kernels)"
    if self.mesh.size != 1 or self.mesh.devices.flat[0].platform != "cpu":
      return "the native kernels run on a single CPU device"
    return native_kernels.unavailable_reason()

  @property
  def decode_kernels(self) -> str:
    """Which kernels decode steps run, in words (for logs)."""
    if self.native_reason:
      return f"XLA's ({self.native_reason})"
    if not self.model.blocks:
      return (f"native attention, XLA's products ({self.model.name} has no Q4_1 / Q8_0 GGUF "
              "matrices)")
    return "native attention and GGUF-block products"

  def _program(self, strategy: Strategy) -> _Program:
    return _Program(self.model.config, strategy, self.pad_id, tuple(self.model.eos_ids),
                    self.dtype, self.mesh, self.native_reason is None)

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

  def _rows(self, n: int) -> int:
    """Slots: data shards x a power of two, at most batch_size (few programs)."""
    rows = self.data_shards
    while rows < n:
      rows *= 2
    return min(rows, self.batch_size)

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
    out = SampleOutput([], [], [], [], [], [], prompt_tokens=sum(map(len, ids)))
    if not ids:
      return out
    run = _Run(self, ids, max_new_tokens, self._program(strategy), seed)
    with tqdm.tqdm(total=len(ids), desc="sampling", unit="prompt", disable=not progress) as bar:
      generated = run.until_all_done(bar)
    out.prefill_s, out.decode_s = run.timing["prefill_s"], run.timing["decode_s"]
    out.prefill_tokens = run.timing["prefill_tokens"]
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


class _Run:
  """One `sample` call: a queue of prompts flowing through the sampler's slots.

  Continuous batching: the decode loop returns to the host when a quarter of the slots (or
  as many as prompts wait) have finished; their outputs are read, and the next prompts are
  prefilled (in chunks of `prefill_chunk` tokens, on top of their shared prefix's cache) and
  admitted into the freed slots, so a long list runs at near full occupancy. Programs depend
  only on the slot count and the cache length (largest prompt bucket + output buffer):
  whatever the prompts, a run compiles one decode, two admission (a first fill, a refill) and
  three prefill programs (those two, and a shared prefix's single row).
  """

  def __init__(self, sampler: Sampler, ids: list[list[int]], max_new_tokens: int,
               program: _Program, seed: int):
    self.sampler, self.ids, self.program = sampler, ids, program
    self.max_new_tokens = max_new_tokens
    self.rows = sampler._rows(len(ids))
    # Refills admit a quarter of the slots at a time (a multiple of the data axis, so their
    # prefill is sharded); the first fill takes all slots at once: two admission programs.
    self.unit = min(self.rows, _round_up(max(1, self.rows // 4), sampler.data_shards))
    buffer = _round_up(max_new_tokens, _BUFFER_MULTIPLE)
    bucket = next(b for b in sampler.buckets if b >= max(map(len, ids)))
    cache_length = bucket + buffer
    self.state = _empty(program=program, rows=self.rows, cache_length=cache_length,
                        buffer=buffer)
    self.blank = _empty(program=program, rows=1, cache_length=cache_length, buffer=1).cache
    order, self.prefix = shared_prefixes(ids, sampler.prefill_chunk)
    self.queue = collections.deque(order)
    self.waiting = collections.Counter(self._prefix_key(i) for i in order)
    self.prefixes: dict[tuple[int, ...], Any] = {}  # Prefilled shared prefixes in use.
    # Row keys from the caller's prompt index: batching does not change the samples.
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.key(seed),
                                                            jnp.arange(len(ids)))
    self.keys = np.asarray(jax.random.key_data(keys))
    self.timing = collections.Counter()

  def _prefix_key(self, i: int) -> tuple[int, ...]:
    return tuple(self.ids[i][:self.prefix[i]])

  def until_all_done(self, bar) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Runs every prompt; returns {prompt index: (tokens, log-probs)} as generated."""
    owner = [-1] * self.rows  # The prompt each slot holds.
    generated = {}
    while self.queue or max(owner) >= 0:
      free = [r for r, i in enumerate(owner) if i < 0]
      if self.queue and free:  # Fills every free slot, or empties the queue.
        n = min(len(free), len(self.queue))
        members = [self.queue.popleft() for _ in range(n)]
        self._admit(members, free[:n], self.unit if n <= self.unit else self.rows)
        for r, i in zip(free, members):
          owner[r] = i
      until = min(self.unit, len(self.queue)) if self.queue else self.rows
      start = time.perf_counter()
      self.state = jax.block_until_ready(_decode(
          self.sampler.params, self.state, self.max_new_tokens, max(until, 1),
          program=self.program))
      self.timing["decode_s"] += time.perf_counter() - start
      done = np.asarray(self.state.done)
      finished = [r for r, i in enumerate(owner) if i >= 0 and done[r]]
      if finished:
        count = np.asarray(self.state.count)
        tokens, logprobs = np.asarray(self.state.tokens), np.asarray(self.state.logprobs)
        for r in finished:
          generated[owner[r]] = tokens[r, :count[r]], logprobs[r, :count[r]]
          owner[r] = -1
        bar.update(len(finished))
    return generated

  def _admit(self, members: list[int], slots: list[int], size: int):
    """Prefills `members` and starts them in `slots` (as `size` rows, padded)."""
    start = time.perf_counter()
    padding = size - len(members)
    bases = []
    for i in members:
      key = self._prefix_key(i)
      if key and key not in self.prefixes:  # A shared prefix: prefilled once, for its group.
        cache, logits = _stack((self.blank,), program=self.program)
        self.prefixes[key] = self._prefill(cache, logits, [0], [list(key)])[0]
      bases.append(self.prefixes[key] if key else self.blank)
      self.waiting[key] -= 1
      if not self.waiting[key]:
        self.prefixes.pop(key, None)
    cache, logits = _stack(tuple(bases) + (self.blank,) * padding, program=self.program)
    starts = [self.prefix[i] for i in members] + [0] * padding
    cache, logits = self._prefill(cache, logits, starts,
                                  [self.ids[i][self.prefix[i]:] for i in members]
                                  + [[]] * padding)
    lengths = np.asarray([len(self.ids[i]) for i in members] + [0] * padding, np.int32)
    keys = np.concatenate([self.keys[members], np.zeros((padding, 2), np.uint32)])
    slots = np.asarray(list(slots) + [self.rows] * padding, np.int32)  # Past the end: dropped.
    self.state = jax.block_until_ready(_admit(
        self.state, cache, logits, slots, lengths, keys, self.max_new_tokens,
        program=self.program))
    self.timing["prefill_s"] += time.perf_counter() - start

  def _prefill(self, cache, logits, starts: list[int], segments: list[list[int]]):
    """Writes each row's token segment into its cache row from slot starts[r], one chunk at a
    time; returns the cache and the logits at each segment's last token."""
    chunk = self.sampler.prefill_chunk
    starts = np.asarray(starts, np.int32)
    self.timing["prefill_tokens"] += sum(map(len, segments))
    for c in range(0, max(map(len, segments)), chunk):
      tokens = np.full((len(segments), chunk), self.sampler.pad_id, np.int32)
      for r, segment in enumerate(segments):
        part = segment[c:c + chunk]
        tokens[r, :len(part)] = part
      remaining = np.asarray([len(s) - c for s in segments])
      cache, logits = _extend(self.sampler.params, cache, starts + c, tokens,
                              np.clip(remaining, 0, chunk).astype(np.int32), logits,
                              (remaining > 0) & (remaining <= chunk), program=self.program)
    return cache, logits


def _round_up(x: int, multiple: int) -> int:
  return -(-x // multiple) * multiple
