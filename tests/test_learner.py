"""What makes the learner sound (issue "Make the steering work"): centred rewards, batch-
normalised advantages, a value head that starts at the mean return, a reference that stops
before it memorises, and feature blocks of comparable size."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from eagle_jax import distributed
from eagle_jax.agent import nets, reference, rl
from eagle_jax.environment import features
from eagle_jax.loop import rollout, train
from eagle_jax.errors import EagleError

D_S, D_U, D_A, K, H = 6, 3, 5, 4, 2


def _cfg(**overrides):
  return rl.RLConfig(scorer=nets.ActionScorer(hidden=16, num_steps=4),
                     value_net=nets.ValueNet(hidden=16, num_steps=4), **overrides)


def _params(cfg):
  k1, k2 = jax.random.split(jax.random.key(0))
  return {"policy": nets.init_policy(k1, cfg.scorer, state_dim=D_S, user_dim=D_U,
                                     action_dim=D_A),
          "value": nets.init_value(k2, cfg.value_net, state_dim=D_S, user_dim=D_U)}


def _batch(batch_size=8, seed=0) -> rl.Batch:
  rs = np.random.default_rng(seed)
  f32 = lambda *shape: rs.normal(size=shape).astype(np.float32)  # noqa: E731
  return rl.Batch(states=f32(batch_size, H, D_S), final_states=f32(batch_size, D_S),
                  users=f32(batch_size, D_U), actions=f32(batch_size, H, K, D_A),
                  masks=np.ones((batch_size, H, K), bool),
                  chosen=rs.integers(0, K, (batch_size, H)).astype(np.int32),
                  rewards=f32(batch_size, H), ref_logits=f32(batch_size, H, K))


def _policy_after_one_step(cfg, batch):
  optimizer = rl.make_optimizer(1e-2, 1e-2)
  state = rl.TrainState.create(_params(cfg), optimizer, jax.random.key(0))
  state, metrics = rl.make_train_step(optimizer, cfg, distributed.make_mesh())(state, batch)
  return state.params["policy"], metrics


def test_normalised_advantages_ignore_an_offset_common_to_every_episode():
  # With gamma = lambda = 1, a terminal offset shifts every step's advantage alike.
  batch = _batch()
  shifted = batch.replace(rewards=batch.rewards + np.array([0.0, 5.0], np.float32))
  a, metrics_a = _policy_after_one_step(_cfg(gae_lambda=1.0), batch)
  b, metrics_b = _policy_after_one_step(_cfg(gae_lambda=1.0), shifted)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, atol=1e-6), a, b)
  # The raw mean advantage still shows the offset (explained variance would not).
  assert float(metrics_b["advantage"]) > float(metrics_a["advantage"]) + 4.0
  # Unnormalised, the same offset pushes every chosen logit up: a different policy.
  c, _ = _policy_after_one_step(_cfg(gae_lambda=1.0, normalize_advantages=False), batch)
  d, _ = _policy_after_one_step(_cfg(gae_lambda=1.0, normalize_advantages=False), shifted)
  assert not all(np.allclose(x, y, atol=1e-6) for x, y in
                 zip(jax.tree.leaves(c), jax.tree.leaves(d)))


def test_value_bias_starts_at_the_mean_return():
  cfg = _cfg()
  params = _params(cfg)
  state, user = jnp.ones(D_S), jnp.ones(D_U)
  before = cfg.value_net.apply({"params": params["value"]}, state, user, 0)
  after = cfg.value_net.apply({"params": train.with_value_bias(params, 2.5)["value"]},
                              state, user, 0)
  bias = params["value"]["value"]["bias"][0]
  np.testing.assert_allclose(after - before, 2.5 - bias, rtol=1e-5)
  assert params["value"]["value"]["bias"][0] == bias  # the input params are not modified


def _episodes(utility):
  utility = np.asarray(utility, np.float32)
  B, T = utility.shape
  return rollout.Episodes(
      anchors=np.arange(B), users=np.zeros((B, 1)), states=np.zeros((B, T, 1)),
      candidates=np.zeros((B, T - 1, 2, 1)),
      masks=np.ones((B, T - 1, 2), bool), actions=[["a"] * (T - 1)] * B,
      chosen=np.zeros((B, T - 1), np.int32), z=np.zeros((B, T, 1)), utility=utility,
      rating=utility, distance=np.zeros_like(utility), texts=[["x"] * T] * B, degenerate=0,
      rejected=[[None] * (T - 1)] * B, llm_s=0.0)


def test_reward_modes_centre_on_the_anchor():
  ep = _episodes([[3.0, 3.5, 3.2], [1.0, 0.5, 2.0]])
  np.testing.assert_allclose(ep.rewards("terminal"), [[0, 3.2], [0, 2.0]])
  np.testing.assert_allclose(ep.rewards("gain"), [[0, 0.2], [0, 1.0]], atol=1e-6)
  np.testing.assert_allclose(ep.rewards("delta"), [[0.5, -0.3], [-0.5, 1.5]], atol=1e-6)
  np.testing.assert_allclose(ep.rewards("delta").sum(1), ep.rewards("gain").sum(1), atol=1e-6)
  with pytest.raises(EagleError, match="rl.reward"):
    ep.rewards("final")


def test_label_smoothing_keeps_a_distribution_over_the_valid_candidates():
  mask = np.array([[True, True, True, False]])
  q = reference.smooth(np.array([[1.0, 0.0, 0.0, 0.0]]), mask, 0.3)
  np.testing.assert_allclose(q, [[0.8, 0.1, 0.1, 0.0]], rtol=1e-6)


def test_reference_sft_stops_where_the_held_out_kl_is_lowest():
  """Held-out targets that contradict the training ones: the longer SFT runs, the worse it
  transfers, so the kept params must be those of the first evaluation."""
  rs = np.random.default_rng(0)
  n = 16
  states, users = rs.normal(size=(n, D_S)), rs.normal(size=(n, D_U))
  actions, mask = rs.normal(size=(n, K, D_A)), np.ones((n, K), bool)
  onehot = lambda i: np.eye(K, dtype=np.float32)[np.full(n, i)]  # noqa: E731
  batch = lambda q: reference.sft_batch(states, users, actions, mask, q, 1)  # noqa: E731
  scorer = nets.ActionScorer(hidden=16, num_steps=2)
  params, metrics = reference.train_reference(
      scorer, batch(onehot(0)), batch(onehot(1)), lr=3e-2, steps=100, mesh=distributed.make_mesh(),
      seed=0, eval_every=10, progress=False)
  assert metrics["best_step"] == 10
  final, final_metrics = reference.train_reference(
      scorer, batch(onehot(0)), None, lr=3e-2, steps=100, mesh=distributed.make_mesh(), seed=0,
      progress=False)
  late = rl.reference_metrics(scorer, final, batch(onehot(1)))
  assert metrics["heldout_kl"] < float(late["kl"])
  assert metrics["train_entropy"] > final_metrics["train_entropy"]  # less sure of itself


def test_unit_rms_puts_feature_blocks_on_one_scale():
  rs = np.random.default_rng(0)
  x = rs.normal(size=(3, 5, 8)) * np.array([0.01, 1.0, 100.0])[:, None, None]
  mask = np.ones((3, 5), bool)
  mask[0, 3:] = False
  out = features.unit_rms(x, mask)
  rms = np.sqrt((np.sum(out ** 2, -1) * mask).sum(-1) / mask.sum(-1))
  np.testing.assert_allclose(rms, 1.0, rtol=1e-6)
  np.testing.assert_allclose(out[1] / out[1, 0, 0], x[1] / x[1, 0, 0])  # relative sizes kept
