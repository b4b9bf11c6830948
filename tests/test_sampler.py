"""The batched sampler: exact greedy decoding, compilation reuse, EOS/stop handling, filters,
seeds and device-count invariance, on a tiny random decoder with a character tokenizer."""

from __future__ import annotations

import dataclasses
import string

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eagle_jax import distributed
from eagle_jax.llm import model as model_lib
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


def test_one_compilation_per_bucket():
  # Buckets no other test uses, so these programs are not in the jit cache yet.
  sampler = sampler_lib.Sampler(tiny_model(), buckets=(40, 72), batch_size=8)
  strategy = sampler_lib.Greedy()
  before = dict(sampler_lib.TRACE_COUNTS)
  def compiled():
    return {k: sampler_lib.TRACE_COUNTS[k] - before.get(k, 0) for k in ("prefill", "decode")}
  sampler.sample(["short", "a bit longer than short"], max_new_tokens=5, strategy=strategy)
  sampler.sample(["different lengths", "in the same bucket, again"], max_new_tokens=9,
                 strategy=strategy)
  assert compiled() == {"prefill": 1, "decode": 1}
  sampler.sample(["x" * 60, "y"], max_new_tokens=9, strategy=strategy)  # Buckets 72 and 40.
  assert compiled() == {"prefill": 2, "decode": 2}
  # Another sampler over the same model shape reuses the programs.
  sampler_lib.Sampler(tiny_model(), buckets=(40,), batch_size=8).sample(
      ["and again"], max_new_tokens=3, strategy=strategy)
  assert compiled() == {"prefill": 2, "decode": 2}


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
  ids = sampler.encode(prompts[0])
  tokens = np.full((8, 32), sampler.pad_id, np.int32)
  tokens[0, 32 - len(ids):] = ids
  pad_len = np.full((8,), 32, np.int32)
  pad_len[0] = 32 - len(ids)
  active = np.arange(8) == 0
  keys = jax.random.split(jax.random.key(0), 8)
  program = sampler._program(sampler_lib.Greedy())
  state = sampler_lib._prefill(sampler.params, tokens, pad_len, active, keys, program=program,
                               cache_length=64, buffer_len=32)
  state = jax.block_until_ready(sampler_lib._decode(sampler.params, state, 32, program=program))
  assert int(state.step) == stop_at + 1  # The loop stopped early: every row was done.
  row, logprobs = np.asarray(state.tokens[0]), np.asarray(state.logprobs[0])
  assert row[:stop_at].tolist() == first[:stop_at] and row[stop_at] == eos
  assert (row[stop_at + 1:] == sampler.pad_id).all() and (logprobs[stop_at + 1:] == 0).all()
  assert (np.asarray(state.tokens[1:]) == sampler.pad_id).all()  # Batch-padding rows.


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
  assert out.token_ids[0] == full.token_ids[0][:cut]  # One token per character here.
  assert len(out.logprobs[0]) == cut


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
def test_one_and_eight_devices_agree(strategy):
  lm = tiny_model()
  prompts = PROMPTS + ["one more", "and another prompt"]
  outs = []
  for n in (1, 8):
    sampler = sampler_lib.Sampler(lm, buckets=(32,), batch_size=8,
                                  mesh=distributed.make_mesh(n))
    assert sampler.params["embed"]["embedding"].sharding.is_fully_replicated
    outs.append(sampler.sample(prompts, max_new_tokens=10, strategy=strategy, seed=7))
  assert outs[0].token_ids == outs[1].token_ids
  assert outs[0].texts == outs[1].texts


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
