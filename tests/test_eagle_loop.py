"""The whole EAGLE loop on real data and the real encoder, with a tiny random decoder as the
environment (gemma-style dummy model: the real SmolLM2 tokenizer and sampler, random weights),
so it runs in about a minute: prepare -> actions -> one-step rollouts + design -> reference
SFT -> policy gradient with checkpoints -> exact resume -> held-out comparison -> report."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from eagle_jax import (candidates, distributed, env as env_lib, evaluate, features, prepared,
                       reference, report, rollout, train)
from eagle_jax.config import load_config
from eagle_jax.llm import model as model_lib
from eagle_jax.llm import sampler as sampler_lib
from eagle_jax.llm.config import ModelConfig
from eagle_jax.llm.weights import load_model

pytestmark = pytest.mark.slow


def smoke_config(workdir, *overrides):
  return load_config("experiments/demo.py:smoke", [f"workdir={str(workdir)!r}", *overrides])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  base = tmp_path_factory.mktemp("loop")
  config = smoke_config(base)
  w = prepared.prepare(config)
  table = candidates.build_table(w, config, progress=False)
  real = load_model("smollm2")
  tiny_config = dataclasses.replace(ModelConfig.tiny("llama"), vocab_size=real.config.vocab_size)
  tiny = dataclasses.replace(real, config=tiny_config,
                             params=model_lib.init_params(tiny_config, jax.random.key(0)))
  sampler = sampler_lib.Sampler(tiny, buckets=(256, 512), batch_size=config.llm.batch_size,
                                mesh=distributed.make_mesh())
  environment = env_lib.EnvironmentLLM(
      sampler, prompt_template=config.env.prompt_template,
      max_new_tokens=config.llm.max_new_tokens, strategy=sampler_lib.make_strategy(0.7, 0, 0.95))
  runner = rollout.EpisodeRunner(w, table, environment, horizon=config.rl.horizon,
                                 personalise=False)
  return config, w, table, runner


@pytest.fixture(scope="module")
def reference_params(world):
  config, w, table, runner = world
  z_next, next_utility, _ = runner.one_step_all(np.arange(table.num_anchors), seed=0)
  subsets, _ = reference.design_subsets(z_next, table.mask, config.design, config.seed)
  q = reference.targets("goptimal", table.mask, next_utility, subsets)
  states, users, cands = features.initial_features(w, table)
  rows = table.split(heldout=False)
  batch = reference.sft_batch(states[rows], users[rows], cands[rows], table.mask[rows],
                              q[rows], config.rl.horizon)
  scorer, _ = train.networks(config, config.rl.horizon)
  params, metrics = reference.train_reference(
      scorer, batch, None, lr=3e-3, steps=60, mesh=distributed.make_mesh(), seed=0,
      progress=False)
  return params, metrics, z_next, subsets


def test_prepared_world_is_consistent(world):
  config, w, table, _ = world
  assert w.item_z.shape == (len(w.items), config.als.dim)
  assert w.text_emb.shape == (len(w.items), 384)
  assert w.metrics["ed_head"]["num_test_movies"] > 0
  # Anchors: distinct movies, held-out ones never among the training movies.
  assert len(set(table.items.tolist())) == table.num_anchors
  assert table.heldout.sum() == 2
  assert table.mask.sum(1).tolist() == [6] * table.num_anchors


def test_design_covers_candidates_better_than_random(world, reference_params):
  config, _, table, _ = world
  _, metrics, z_next, subsets = reference_params
  assert z_next.shape == (table.num_anchors, 6, config.als.dim)
  assert subsets.shape == (table.num_anchors, config.design.subset_size)
  goptimal = reference.subset_coverage(z_next, table.mask, subsets)
  random = reference.subset_coverage(
      z_next, table.mask, reference.random_subsets(table.mask, config.design.subset_size, 0))
  assert goptimal["max_leverage"] <= random["max_leverage"] + 1e-3
  assert metrics["train_accuracy"] == 1.0  # argmax of pi_ref lies in the design subset


def _train(world, ref_params, workdir, iterations, resume):
  config, _, _, runner = world
  config = smoke_config(workdir, f"rl.iterations={iterations}")
  return train.train(config, runner, ref_params, distributed.make_mesh(), resume=resume,
                     progress=False)


def test_resume_replays_the_uninterrupted_run(world, reference_params, tmp_path):
  ref_params = reference_params[0]
  policy_a, _, history_a = _train(world, ref_params, tmp_path / "a", 3, resume=False)
  _train(world, ref_params, tmp_path / "b", 2, resume=False)  # "Crashes" after step 2.
  policy_b, _, history_b = _train(world, ref_params, tmp_path / "b", 3, resume=True)
  assert [r["step"] for r in history_b] == [1, 2, 3]
  for ra, rb in zip(history_a, history_b):
    for key in ("utility/total", "loss/kl", "loss/loss"):
      assert ra[key] == rb[key], (key, ra, rb)
  jax.tree.map(np.testing.assert_array_equal, policy_a, policy_b)
  # The policy moved away from its reference and was checkpointed every step.
  assert history_a[-1]["loss/kl"] > 0
  assert history_a[-1]["env/tokens_per_s"] > 0 and 0 < history_a[-1]["time/non_llm_fraction"] < 1
  assert sorted(p.name for p in (tmp_path / "a" / "checkpoints").iterdir()
                if p.name.isdigit()) == ["1", "2", "3"]


def test_fresh_run_refuses_to_overwrite_checkpoints(world, reference_params, tmp_path):
  _train(world, reference_params[0], tmp_path, 1, resume=False)
  from eagle_jax.errors import EagleError
  with pytest.raises(EagleError, match="pass --resume"):
    _train(world, reference_params[0], tmp_path, 1, resume=False)


def test_batch_not_divisible_by_the_devices_is_refused_before_any_rollout(world, tmp_path,
                                                                         monkeypatch):
  n = jax.device_count()
  if n == 1:
    pytest.skip("needs several devices (make test fakes 8)")
  config, _, _, runner = world
  monkeypatch.setattr(runner, "run",
                      lambda *a, **k: pytest.fail("a rollout ran before the batch size was checked"))
  from eagle_jax.errors import EagleError
  with pytest.raises(EagleError, match=f"rl.batch_size={n + 1}: not divisible by the {n}"):
    train.train(smoke_config(tmp_path, f"rl.batch_size={n + 1}"), runner, None,
                distributed.make_mesh(), resume=False, progress=False)


def test_evaluation_and_report(world, reference_params, tmp_path):
  config, w, table, runner = world
  ref_params = reference_params[0]
  scorer, _ = train.networks(config, config.rl.horizon)
  results, episodes = evaluate.compare_policies(
      runner, scorer, ref_params, ref_params, table.split(heldout=True), episodes_per_pair=2,
      best_of_n=2, seed=0, greedy_baseline=True)
  for name in ("eagle", "reference", "random", "greedy_one_step", "best_of_2"):
    assert results[name]["n"] == 4 and np.isfinite(results[name]["mean"])
  # Same policy, same environment seeds: identical outcomes (common random numbers).
  assert results["eagle"]["minus_reference"]["mean"] == 0.0
  assert results["reference"]["minus_random"]["n"] == 4 and "minus_random" not in results["random"]
  path = tmp_path / "report.png"
  report.write_report(path, history=[{"step": 1, "reward/mean": 1.0}], comparison=results,
      catalogue_z=w.item_z,
      trajectories=episodes["eagle"].z, anchor_z=episodes["eagle"].z[:, 0], title="t")
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  json.dumps(results)  # eval.json must serialise


def test_regenerated_candidates_at_later_states(world, reference_params):
  config, w, table, runner = world
  regen = rollout.EpisodeRunner(w, table, runner.env, horizon=config.rl.horizon,
                                personalise=False,
                                regenerate=candidates.Regenerator(w, config))
  anchors = table.split(heldout=False)[:3]
  scorer, _ = train.networks(config, config.rl.horizon)
  episodes = regen.run(anchors, rollout.scorer_policy(scorer, reference_params[0], regen,
                                                      greedy=True), seed=0)
  K = table.mask.shape[1]
  assert episodes.masks.shape == (3, config.rl.horizon, K) and episodes.masks.all()
  for b, a in enumerate(anchors):
    assert episodes.actions[b][0] == table.actions[a][episodes.chosen[b, 0]]  # x_0: the anchor's
  # x_1: a fresh library draw, so its candidates (and their features) are new.
  fresh = regen.candidates(1, anchors, [t[1] for t in episodes.texts], seed=1)[0]
  assert all(set(f) != set(table.actions[a]) for f, a in zip(fresh, anchors))
  assert all(e[1] in f for e, f in zip(episodes.actions, fresh))
  assert not np.allclose(episodes.candidates[:, 1, :, :384], table.action_emb[anchors])
  batch = train.episodes_to_batch(episodes, regen, rollout.logits_of(
      scorer, reference_params[0], regen, episodes), "terminal")
  assert batch.actions.shape[:3] == (3, config.rl.horizon, K)
