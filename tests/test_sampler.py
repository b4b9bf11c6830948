"""The batched sampler: exact greedy decoding, compilation reuse, EOS/stop handling, filters,
seeds and device-count invariance, on a tiny random decoder with a character tokenizer."""

from __future__ import annotations

import collections
import dataclasses
import string

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tqdm
from jax.sharding import PartitionSpec as P

from eagle_jax import distributed
from eagle_jax.llm import model as model_lib
from eagle_jax.llm import partitioning
from eagle_jax.llm import sampler as sampler_lib
from eagle_jax.llm.weights import LoadedModel
from tests.fakes import BOS, CHAT_TEMPLATE, PAD, tiny_model

_ORACLE_LENGTH = 96


def naive_greedy(lm: LoadedModel, ids: list[int], steps: int) -> list[int]:
  """Oracle: re-run the whole sequence through `forward` and take the argmax, no cache.

  Sequences are right-padded to one length (causal attention ignores the tail): one compile.
  """
  out = []
  for _ in range(steps):
    seq = ids + out
    padded = jnp.asarray([seq + [PAD] * (_ORACLE_LENGTH - len(seq))], jnp.int32)
    logits = model_lib.forward(lm.params, lm.config, padded)
    token = int(jnp.argmax(logits[0, len(seq) - 1]))
    if token in lm.eos_ids:
      break
    out.append(token)
  return out


PROMPTS = ["hi", "a prompt of medium size", "the longest prompt, it spills"]


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_greedy_equals_naive_forward_loop(arch):
  lm = tiny_model(arch)
  sampler = sampler_lib.Sampler(lm, buckets=(8, 32), batch_size=8)
  out = sampler.sample(PROMPTS, max_new_tokens=10, strategy=sampler_lib.Greedy(),
                       apply_template=False)
  for i, prompt in enumerate(PROMPTS):  # Two buckets: also checks the order is restored.
    ids = sampler.encode(prompt)
    assert ids[0] == BOS and out.prompt_lengths[i] == len(ids)
    expected = naive_greedy(lm, ids, 10)
    assert out.token_ids[i] == expected
    assert out.texts[i] == lm.tokenizer.decode(expected, skip_special_tokens=True)
    # Log-probs are those of the untempered model distribution.
    seq = ids + expected
    logits = model_lib.forward(lm.params, lm.config,
                               jnp.asarray([seq + [PAD] * (_ORACLE_LENGTH - len(seq))]))
    logp = jax.nn.log_softmax(logits[0, len(ids) - 1:len(seq) - 1])
    want = np.take_along_axis(np.asarray(logp), np.asarray(expected)[:, None], 1)[:, 0]
    np.testing.assert_allclose(out.logprobs[i], want, atol=1e-4)


def _trace_counter():
  before = dict(sampler_lib.TRACE_COUNTS)
  def compiled():
    return {k: sampler_lib.TRACE_COUNTS[k] - before.get(k, 0)
            for k in ("prefill", "admit", "decode")}
  return compiled


def test_one_compilation_per_bucket():
  # Buckets no other test uses, so these programs are not in the jit cache yet.
  sampler = sampler_lib.Sampler(tiny_model(), buckets=(40, 72), batch_size=8)
  strategy = sampler_lib.Greedy()
  compiled = _trace_counter()
  sampler.sample(["short", "a bit longer than short"], max_new_tokens=5, strategy=strategy)
  sampler.sample(["different lengths", "in the same bucket, again"], max_new_tokens=9,
                 strategy=strategy)
  assert compiled() == {"prefill": 1, "admit": 1, "decode": 1}
  sampler.sample(["x" * 60, "y"], max_new_tokens=9, strategy=strategy)  # Cache for bucket 72.
  assert compiled() == {"prefill": 2, "admit": 2, "decode": 2}
  # Another sampler over the same model shape reuses the programs (same 2 slots: one prompt
  # would take a 1-slot program, compiled or not depending on which tests ran before).
  sampler_lib.Sampler(tiny_model(), buckets=(40,), batch_size=8).sample(
      ["and again", "once more"], max_new_tokens=3, strategy=strategy)
  assert compiled() == {"prefill": 2, "admit": 2, "decode": 2}


# Prompts whose greedy answers hit the EOS at different steps: slots free up unevenly.
MANY = [f"prompt {i}: " + "ab" * (i % 5) + "xyz"[: i % 3] for i in range(11)]


def _eos_at_varied_steps(arch: str) -> LoadedModel:
  """The tiny model with an EOS id that ends MANY's greedy answers at different lengths."""
  free = tiny_model(arch, eos_ids=())
  sampler = sampler_lib.Sampler(free, buckets=(32,), batch_size=16,
                                mesh=distributed.make_mesh(1))
  runs = sampler.sample(MANY, max_new_tokens=12, strategy=sampler_lib.Greedy())
  firsts = collections.Counter(t for ids in runs.token_ids for t in set(ids[2:]))
  eos = max(firsts, key=lambda t: (0 < firsts[t] < len(MANY), firsts[t]))
  return dataclasses.replace(free, eos_ids=(eos,))


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_continuous_batching_refills_slots_and_matches_the_oracle(arch, monkeypatch):
  lm = _eos_at_varied_steps(arch)
  sampler = sampler_lib.Sampler(lm, buckets=(32,), batch_size=4, mesh=distributed.make_mesh(1))
  admitted = []  # The slots of each admission.
  admit = sampler_lib._admit
  def counting_admit(state, cache, logits, slots, *args, **kwargs):
    admitted.append(slots.tolist())
    return admit(state, cache, logits, slots, *args, **kwargs)
  monkeypatch.setattr(sampler_lib, "_admit", counting_admit)
  out = sampler.sample(MANY, max_new_tokens=12, strategy=sampler_lib.Greedy())
  lengths = {len(ids) for ids in out.token_ids}
  assert len(lengths) > 2 and any(out.finished) and not all(out.finished), lengths
  for i, prompt in enumerate(MANY):  # 11 prompts through 4 slots, each exact.
    assert out.token_ids[i] == naive_greedy(lm, sampler.encode(prompt), 12), i
  # 4 slots filled at once, then refilled as their prompts finished (one at a time, or all
  # that finished on the same step; slot 4 is a dropped padding row).
  real = [[r for r in slots if r < 4] for slots in admitted]
  assert real[0] == [0, 1, 2, 3] and sum(map(len, real)) == len(MANY)
  assert len(admitted) >= 4 and all(len(slots) in (1, 4) for slots in admitted)
  # Sampled draws do not depend on the slot or the other rows either.
  strategy = sampler_lib.Temperature(1.0)
  wide = sampler_lib.Sampler(lm, buckets=(32,), batch_size=16, mesh=distributed.make_mesh(1))
  assert (sampler.sample(MANY, max_new_tokens=12, strategy=strategy, seed=4).token_ids
          == wide.sample(MANY, max_new_tokens=12, strategy=strategy, seed=4).token_ids)


def test_no_recompilation_after_warm_up():
  lm = _eos_at_varied_steps("llama")
  sampler = sampler_lib.Sampler(lm, buckets=(48,), batch_size=4, mesh=distributed.make_mesh(1),
                                prefill_chunk=8)
  strategy = sampler_lib.Greedy()
  sampler.sample(MANY + ["q" * 30], max_new_tokens=12, strategy=strategy)  # Warm-up.
  compiled = _trace_counter()
  # Other prompts, counts (as many slots: 3 to 12), lengths, EOS steps, shared prefixes and
  # max_new_tokens (in the same output buffer).
  sampler.sample(MANY[::-1][:7], max_new_tokens=10, strategy=strategy)
  sampler.sample(["one"] + [m + "more" for m in MANY], max_new_tokens=12, strategy=strategy)
  sampler.sample(["three", "short", "prompts"], max_new_tokens=3, strategy=strategy)
  assert compiled() == {"prefill": 0, "admit": 0, "decode": 0}


def test_shared_prefixes_groups_neighbours():
  ids = [[1, 2, 3, 4, 5, 6], [9, 9], [1, 2, 3, 4, 7], [1, 2, 3, 4, 5, 8], [1, 2, 3]]
  order, prefix = sampler_lib.shared_prefixes(ids, min_shared=3)
  assert order == [4, 0, 3, 2, 1]  # Lexicographic: shared prefixes are adjacent.
  # 0, 3 and 2 share 4 tokens ([1, 2, 3] would have to give up its last token: alone).
  assert prefix == [4, 0, 4, 4, 0]
  assert sampler_lib.shared_prefixes(ids, min_shared=5)[1] == [5, 0, 0, 5, 0]
  assert sampler_lib.shared_prefixes(ids, min_shared=6)[1] == [0] * 5
  # A neighbour sharing little does not cut the group's prefix; one sharing twice as much
  # starts its own group.
  loose = [[1, 2, 3, 9, 9, 9], [1, 2, 3, 4, 5, 6, 7, 8, 1], [1, 2, 3, 4, 5, 6, 7, 8, 2],
           [1, 2, 3, 4, 5, 6, 7, 8, 3]]
  assert sampler_lib.shared_prefixes(loose, min_shared=2)[1] == [0, 8, 8, 8]


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_shared_prefix_prefill_equals_unshared(arch):
  lm = tiny_model(arch)
  state = "Here is a movie description: a lonely keeper on a distant moon. Change: "
  prompts = [state + a for a in ("darker", "funnier", "in space", "kids")]
  prompts += ["an unrelated prompt", state[:20] + "different"]
  sampler = sampler_lib.Sampler(lm, buckets=(128,), batch_size=4, mesh=distributed.make_mesh(1),
                                prefill_chunk=8)
  out = sampler.sample(prompts, max_new_tokens=8, strategy=sampler_lib.Greedy())
  ids = [sampler.encode(p) for p in prompts]
  shared = sampler_lib.shared_prefixes(ids, 8)[1]
  assert shared == [len(sampler.encode(state))] * 4 + [0, 0]
  # The 4 answers to one state prefilled its description once.
  assert out.prefill_tokens == sum(map(len, ids)) - 3 * shared[0]
  for i in range(len(prompts)):
    assert out.token_ids[i] == naive_greedy(lm, ids[i], 8), i
  unshared = sampler_lib.Sampler(lm, buckets=(128,), batch_size=4,
                                 mesh=distributed.make_mesh(1), prefill_chunk=4096)
  again = unshared.sample(prompts, max_new_tokens=8, strategy=sampler_lib.Greedy())
  assert again.prefill_tokens == sum(map(len, ids))
  assert again.token_ids == out.token_ids
  np.testing.assert_allclose(np.concatenate(again.logprobs), np.concatenate(out.logprobs),
                             atol=1e-5)


def test_eos_stops_each_sequence_and_masks_the_rest():
  free = tiny_model(eos_ids=())
  prompts = ["first prompt", "second prompt here"]
  runs = sampler_lib.Sampler(free, buckets=(32,), batch_size=8).sample(
      prompts, max_new_tokens=12, strategy=sampler_lib.Greedy())
  first = runs.token_ids[0]
  stop_at = next(k for k in range(2, 12) if first[k] not in first[:k])
  eos = first[stop_at]
  assert eos not in runs.token_ids[1], "pick another prompt: the EOS must only hit row 0"
  lm = dataclasses.replace(free, eos_ids=(eos,))
  sampler = sampler_lib.Sampler(lm, buckets=(32,), batch_size=8)
  out = sampler.sample(prompts, max_new_tokens=12, strategy=sampler_lib.Greedy())
  assert out.token_ids[0] == first[:stop_at] and out.finished == [True, False]
  assert out.token_ids[1] == runs.token_ids[1]  # The finished row does not disturb the other.
  np.testing.assert_allclose(out.logprobs[0], runs.logprobs[0][:stop_at], atol=1e-5)
  assert out.num_generated == [stop_at, 12] and out.tokens == stop_at + 1 + 12

  # In the device buffer, everything after the EOS is pad with log-prob 0.
  run = sampler_lib._Run(sampler, [sampler.encode(prompts[0])], 32,
                         sampler._program(sampler_lib.Greedy()), seed=0)
  with tqdm.tqdm(disable=True) as bar:
    run.until_all_done(bar)
  row, logprobs = np.asarray(run.state.tokens[0]), np.asarray(run.state.logprobs[0])
  assert int(run.state.count[0]) == stop_at + 1  # The loop stopped at the EOS, not at 32.
  assert row[:stop_at].tolist() == first[:stop_at] and row[stop_at] == eos
  assert (row[stop_at + 1:] == sampler.pad_id).all() and (logprobs[stop_at + 1:] == 0).all()
  assert (np.asarray(run.state.tokens[1:]) == sampler.pad_id).all()  # Empty slots.


def test_stop_string_truncates_text_and_tokens():
  lm = tiny_model(eos_ids=())
  sampler = sampler_lib.Sampler(lm, buckets=(32,), batch_size=8)
  full = sampler.sample(["stop me"], max_new_tokens=16, strategy=sampler_lib.Greedy())
  text = full.texts[0]
  stop = text[5:7]
  cut = text.find(stop)
  out = sampler.sample(["stop me"], max_new_tokens=16, strategy=sampler_lib.Greedy(),
                       stop=("never there", stop))
  assert out.texts == [text[:cut]] and out.finished == [True]
  # The longest prefix of the full answer's tokens whose text ends before the stop string.
  n = len(out.token_ids[0])
  decode = lambda ids: lm.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
  assert out.token_ids[0] == full.token_ids[0][:n] and len(out.logprobs[0]) == n
  assert len(decode(full.token_ids[0][:n])) <= cut < len(decode(full.token_ids[0][:n + 1]))


def test_top_k_one_is_greedy():
  sampler = sampler_lib.Sampler(tiny_model(), buckets=(32,), batch_size=8)
  greedy = sampler.sample(PROMPTS[:2], max_new_tokens=8, strategy=sampler_lib.Greedy())
  top1 = sampler.sample(PROMPTS[:2], max_new_tokens=8, strategy=sampler_lib.Temperature(
      temperature=5.0, top_k=1), seed=3)
  assert top1.token_ids == greedy.token_ids


def test_top_p_keeps_the_nucleus():
  probs = np.array([0.05, 0.5, 0.1, 0.2, 0.15])
  logits = jnp.log(jnp.asarray(probs, jnp.float32))
  def kept(p):
    return set(np.flatnonzero(np.asarray(sampler_lib.top_p_mask(logits, p))))
  assert kept(0.3) == {1}  # The argmax alone already has 0.5 >= 0.3.
  assert kept(0.6) == {1, 3}  # 0.5 < 0.6, adding 0.2 crosses it.
  assert kept(0.75) == {1, 3, 4}
  assert kept(1.0) == {0, 1, 2, 3, 4}
  assert set(np.flatnonzero(np.asarray(sampler_lib.top_k_mask(logits, 2)))) == {1, 3}
  # Sampling never leaves the nucleus, and does reach both of its members.
  strategy = sampler_lib.Temperature(1.0, top_p=0.6)
  keys = jax.random.split(jax.random.key(0), 200)
  draws = np.asarray(jax.vmap(strategy, in_axes=(None, 0))(logits, keys))
  assert set(draws.tolist()) == {1, 3}


def test_seeds_are_deterministic():
  sampler = sampler_lib.Sampler(tiny_model(), buckets=(32,), batch_size=8)
  strategy = sampler_lib.Temperature(1.0)
  def run(seed):
    return sampler.sample(PROMPTS[:2], max_new_tokens=12, strategy=strategy, seed=seed)
  a, b, c = run(0), run(0), run(1)
  assert a.token_ids == b.token_ids
  assert a.token_ids != c.token_ids
  assert a.token_ids != sampler.sample(PROMPTS[:2], max_new_tokens=12,
                                       strategy=sampler_lib.Greedy()).token_ids


@pytest.mark.skipif(jax.device_count() < 8,
                    reason="needs XLA_FLAGS=--xla_force_host_platform_device_count=8")
@pytest.mark.parametrize("strategy", [sampler_lib.Greedy(), sampler_lib.Temperature(1.0)])
def test_sharded_meshes_agree_with_one_device(strategy):
  """Rows over `data`, weights and KV cache over `model`: 8x1, 4x2 and 2x4 sample what one
  device samples. tiny llama: 4 heads, 2 KV heads, so at model 4 the cache stays whole."""
  lm = tiny_model()
  prompts = PROMPTS + ["one more", "and another prompt"]
  meshes = [(1, 1), (8, 1), (4, 2), (2, 4)]
  if isinstance(strategy, sampler_lib.Temperature):
    meshes = [(1, 1), (2, 4)]
  outs = []
  for data, model in meshes:
    mesh = distributed.make_mesh(data * model, model=model)
    sampler = sampler_lib.Sampler(lm, buckets=(32,), batch_size=8, mesh=mesh)
    q = sampler.params["layers_0"]["attn"]["q"]["kernel"]
    assert q.addressable_shards[0].data.shape == (4 // model, 8, 32)  # 1/model of the heads.
    outs.append(sampler.sample(prompts, max_new_tokens=10, strategy=strategy, seed=7))
    for out in outs[1:]:
      assert out.token_ids == outs[0].token_ids, (data, model)
      assert out.texts == outs[0].texts
      for a, b in zip(out.logprobs, outs[0].logprobs):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_partition_specs_split_what_the_model_axis_divides():
  if jax.device_count() < 4:
    pytest.skip("needs 4 devices")
  mesh = distributed.make_mesh(4, model=4)
  spec = lambda path, shape: partitioning.param_spec(path, shape, mesh)  # noqa: E731
  assert spec(("layers_0", "attn", "q", "kernel"), (4, 8, 32)) == P("model", None, None)
  assert spec(("layers_0", "attn", "k", "kernel"), (2, 8, 32)) == P(None, None, None)
  assert spec(("layers_0", "attn", "o", "kernel"), (32, 4, 8)) == P(None, "model", None)
  assert spec(("layers_0", "mlp", "down", "kernel"), (32, 64)) == P(None, "model")
  assert spec(("embed", "embedding"), (300, 32)) == P("model", None)
  assert spec(("lm_head",), (300, 32)) == P("model", None)
  assert spec(("layers_0", "attn_norm", "scale"), (32,)) == P(None)
  assert partitioning.cache_spec((8, 4, 40, 8), mesh) == P("data", "model", None, None)
  assert partitioning.cache_spec((1, 2, 40, 8), mesh, rows=False) == P(None, None, None, None)


def test_long_prompt_is_truncated_from_the_left():
  sampler = sampler_lib.Sampler(tiny_model(), buckets=(8, 32), batch_size=8)
  long_prompt = string.ascii_letters[:40]
  with pytest.warns(UserWarning, match="prompt 1 has 41 tokens"):
    out = sampler.sample(["ok", long_prompt], max_new_tokens=4,
                         strategy=sampler_lib.Greedy(), apply_template=False)
  assert out.prompt_lengths == [3, 32]
  ids = sampler.encode(long_prompt[-31:])  # BOS kept, then the end of the text.
  assert ids[0] == BOS and len(ids) == 32
  assert out.token_ids[1] == naive_greedy(sampler.model, ids, 4)


def test_chat_template_is_applied():
  lm = tiny_model(chat_template=CHAT_TEMPLATE)
  sampler = sampler_lib.Sampler(lm, buckets=(32,), batch_size=8)
  out = sampler.sample(["hey"], max_new_tokens=3, strategy=sampler_lib.Greedy())
  templated = "<user>hey\n<assistant>"
  assert out.prompt_lengths == [1 + len(templated)]
  assert out.token_ids[0] == naive_greedy(lm, sampler.encode(templated), 3)


@pytest.mark.slow
def test_smollm2_greedy_is_sensible():
  from eagle_jax.llm.weights import load_model
  lm = load_model("smollm2")
  sampler = sampler_lib.Sampler(lm, buckets=(64,), batch_size=1,
                                mesh=distributed.make_mesh(1))  # Not 8 padded rows.
  out = sampler.sample(["Describe a heist movie in one sentence."], max_new_tokens=16,
                       strategy=sampler_lib.Greedy())
  words = set(out.texts[0].lower().replace(",", " ").replace(".", " ").split())
  assert words & {"heist", "thieves", "thief", "robbery", "steal", "bank", "crew", "team"}, out


def test_top_k_then_top_p_renormalises_over_the_k_survivors():
  # probs [0.05, 0.5, 0.1, 0.2, 0.15]; top-3 = {1, 3, 4} with renormalised mass
  # [0.588, 0.235, 0.176]: a 0.75 nucleus inside them is {1, 3} (0.588 < 0.75 <= 0.824),
  # whereas over the full vocabulary the mass before token 4 is only 0.7 < 0.75.
  logits = jnp.log(jnp.asarray([0.05, 0.5, 0.1, 0.2, 0.15], jnp.float32))
  assert set(np.flatnonzero(np.asarray(sampler_lib.top_p_mask(logits, 0.75)))) == {1, 3, 4}
  strategy = sampler_lib.Temperature(1.0, top_k=3, top_p=0.75)
  keys = jax.random.split(jax.random.key(1), 300)
  drawn = set(np.asarray(jax.vmap(lambda k: strategy(logits, k))(keys)).tolist())
  assert drawn == {1, 3}
  strategy = sampler_lib.Temperature(1.0, top_k=3, top_p=0.9)  # 0.824 < 0.9: all three
  assert set(np.asarray(jax.vmap(lambda k: strategy(logits, k))(keys)).tolist()) == {1, 3, 4}
