"""RL losses (hand-computed), gradient directions, stop_gradient, SFT, and the sharded update."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from eagle_jax import distributed
from eagle_jax.agent import nets, rl
from eagle_jax.errors import EagleError

D_S, D_U, D_A, K, H = 6, 3, 5, 4, 3


def _cfg(**overrides):
  return rl.RLConfig(scorer=nets.ActionScorer(hidden=16, num_steps=4),
                     value_net=nets.ValueNet(hidden=16, num_steps=4), **overrides)


def _params(cfg, seed=0):
  k1, k2 = jax.random.split(jax.random.key(seed))
  return {
      "policy": nets.init_policy(k1, cfg.scorer, state_dim=D_S, user_dim=D_U, action_dim=D_A),
      "value": nets.init_value(k2, cfg.value_net, state_dim=D_S, user_dim=D_U),
  }


def _batch(batch_size, seed=0, ref_params=None, cfg=None, horizon=H) -> rl.Batch:
  """Random episodes (numpy: no per-shape compiles); ref_logits from `ref_params`."""
  rs = np.random.default_rng(100 + seed)
  masks = rs.uniform(size=(batch_size, horizon, K)) > 0.25
  masks[:, :, 0] = True  # At least one valid candidate per state.
  chosen = np.argmax(np.where(masks, rs.uniform(size=masks.shape), -1.0), -1)
  rewards = np.zeros((batch_size, horizon), np.float32)
  rewards[:, -1] = rs.normal(size=batch_size)
  f32 = lambda *shape: rs.normal(size=shape).astype(np.float32)
  batch = rl.Batch(
      states=f32(batch_size, horizon, D_S), final_states=f32(batch_size, D_S),
      users=f32(batch_size, D_U), actions=f32(batch_size, horizon, K, D_A),
      masks=masks, chosen=chosen.astype(np.int32), rewards=rewards,
      ref_logits=f32(batch_size, horizon, K))
  if ref_params is not None:
    flat = lambda x: x.reshape((-1,) + x.shape[2:])
    logits = nets.batched_logits(
        cfg.scorer, ref_params, flat(batch.states), np.repeat(batch.users, horizon, axis=0),
        flat(batch.actions), flat(batch.masks), np.tile(np.arange(horizon), batch_size))
    batch = batch.replace(ref_logits=np.asarray(logits).reshape(batch_size, horizon, K))
  return batch


def _episode(batch, i=0):
  return jax.tree.map(lambda x: x[i], batch)


# Jitted once per config: eager op-by-op dispatch of the vmapped nets is slow on 2 cores.
_episode_loss = jax.jit(rl.episode_loss, static_argnums=3)


# ---------------------------------------------------------------------------------------
# Hand-computed pieces.


def test_gae_three_steps_by_hand():
  rewards = jnp.array([1.0, 0.0, 2.0])
  values = jnp.array([0.5, 1.0, -0.5, 2.0])
  discounts = jnp.array([0.9, 0.9, 0.0])
  # deltas: 1 + .9*1 - .5 = 1.4;  0 + .9*(-.5) - 1 = -1.45;  2 + 0*2 - (-.5) = 2.5
  # A2 = 2.5;  A1 = -1.45 + .9*.8*2.5 = 0.35;  A0 = 1.4 + .72*.35 = 1.652
  advantages = rl.gae(rewards, values, discounts, 0.8)
  np.testing.assert_allclose(advantages, [1.652, 0.35, 2.5], rtol=1e-6)
  # lambda = 1: discounted Monte-Carlo return minus the baseline.
  mc = rl.gae(rewards, values, jnp.array([1.0, 1.0, 0.0]), 1.0)
  np.testing.assert_allclose(mc, [3.0 - 0.5, 2.0 - 1.0, 2.0 + 0.5], rtol=1e-6)


def test_gae_checks_shapes():
  with pytest.raises(AssertionError):
    rl.gae(jnp.zeros(3), jnp.zeros(3), jnp.zeros(3), 0.9)


def test_kl_and_entropy_by_hand_with_a_mask():
  mask = jnp.array([True, True, True, False])
  # p = (1/2, 1/4, 1/4), q = (1/4, 1/4, 1/2) on the valid candidates; the masked 4th
  # candidate carries huge logits that must be ignored.
  logits_p = jnp.log(jnp.array([0.5, 0.25, 0.25, 1.0])).at[3].set(100.0)
  logits_q = jnp.log(jnp.array([0.25, 0.25, 0.5, 1.0])).at[3].set(-100.0)
  # KL = 1/2 ln 2 + 1/4 ln 1 + 1/4 ln(1/2) = ln(2)/4;  H(p) = 3/2 ln 2.
  np.testing.assert_allclose(rl.categorical_kl(logits_p, logits_q, mask), math.log(2) / 4,
                             rtol=1e-6)
  np.testing.assert_allclose(rl.entropy(logits_p, mask), 1.5 * math.log(2), rtol=1e-6)
  np.testing.assert_allclose(rl.categorical_kl(logits_p, logits_p + 3.0, mask), 0.0, atol=1e-7)
  # Cross-entropy to q: -(1/4 ln 1/2 + 1/4 ln 1/4 + 1/2 ln 1/4) = 1.25 ln 4... written out:
  q = jnp.array([0.25, 0.25, 0.5, 0.0])
  expected_ce = -(0.25 * math.log(0.5) + 0.25 * math.log(0.25) + 0.5 * math.log(0.25))
  np.testing.assert_allclose(rl.cross_entropy(q, logits_p, mask), expected_ce, rtol=1e-6)


def test_masked_logits_keep_kl_and_entropy_finite():
  mask = jnp.array([True, False, False])
  logits = jnp.array([0.3, nets.MASKED_LOGIT, nets.MASKED_LOGIT])
  assert float(rl.entropy(logits, mask)) == 0.0
  assert float(rl.categorical_kl(logits, jnp.array([5.0, 0.0, 0.0]), mask)) == 0.0
  grad = jax.grad(rl.categorical_kl)(logits, jnp.zeros(3), mask)
  assert np.all(np.isfinite(grad))


# ---------------------------------------------------------------------------------------
# The episode loss.


def test_episode_loss_composition_and_kl_to_itself_is_zero():
  cfg = _cfg(kl_coef=0.3, entropy_coef=0.05, value_coef=0.7, gae_lambda=1.0)
  params = _params(cfg)
  episode = _episode(_batch(2, ref_params=params["policy"], cfg=cfg))
  loss, m = _episode_loss(params["policy"], params["value"], episode, cfg)
  np.testing.assert_allclose(m["kl"], 0.0, atol=1e-5)  # pi == pi_ref.
  expected = m["pg_loss"] + 0.3 * m["kl"] - 0.05 * m["entropy"] + 0.7 * m["value_loss"]
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  assert m["values"].shape == m["returns"].shape == (H,)
  # Terminal reward, gamma = 1: every return-to-go equals the final reward.
  np.testing.assert_allclose(m["returns"], np.full(H, episode.rewards[-1]), rtol=1e-5,
                             atol=1e-6)


def test_final_state_bootstraps_only_when_asked():
  cfg = _cfg(gamma=1.0, gae_lambda=1.0)
  params = _params(cfg)
  episode = _episode(_batch(1))
  _, m = _episode_loss(params["policy"], params["value"], episode, cfg)
  np.testing.assert_allclose(m["returns"][-1], episode.rewards[-1], rtol=1e-6)
  boot = _cfg(gamma=1.0, gae_lambda=1.0, bootstrap=True)
  _, mb = _episode_loss(params["policy"], params["value"], episode, boot)
  v_final = cfg.value_net.apply({"params": params["value"]}, episode.final_states,
                                episode.users, H)
  np.testing.assert_allclose(mb["returns"][-1], episode.rewards[-1] + v_final, rtol=1e-5)


@pytest.mark.parametrize("reward, direction", [(10.0, 1.0), (-10.0, -1.0)])
def test_advantage_sign_moves_the_chosen_logit(reward, direction):
  cfg = _cfg(kl_coef=0.0, entropy_coef=0.0, value_coef=0.0)
  params = _params(cfg)
  episode = _episode(_batch(1, horizon=1))
  episode = episode.replace(rewards=np.array([reward], np.float32))

  def chosen_log_prob(policy_params):
    logits = cfg.scorer.apply({"params": policy_params}, episode.states[0], episode.users,
                              episode.actions[0], episode.masks[0], 0)
    return jax.nn.log_softmax(logits)[episode.chosen[0]]

  _, m = _episode_loss(params["policy"], params["value"], episode, cfg)
  assert np.sign(float(m["advantage"])) == direction
  grads = jax.jit(jax.grad(rl.episode_loss, has_aux=True), static_argnums=3)(
      params["policy"], params["value"], episode, cfg)[0]
  stepped = jax.tree.map(lambda p, g: p - 1e-3 * g, params["policy"], grads)
  change = chosen_log_prob(stepped) - chosen_log_prob(params["policy"])
  assert direction * float(change) > 0


def test_stop_gradient_separates_policy_and_value():
  cfg = _cfg(kl_coef=0.2, entropy_coef=0.1, value_coef=1.0)
  params = _params(cfg)
  episode = _episode(_batch(1, seed=3))

  @jax.jit
  def grad_norms(pp, vp):
    """{(metric, "policy" | "value"): norm of d metric / d params}."""
    norms = {}
    for metric in ("pg_loss", "kl", "entropy", "value_loss"):
      fn = lambda pp, vp: rl.episode_loss(pp, vp, episode, cfg)[1][metric]
      g_policy, g_value = jax.grad(fn, argnums=(0, 1))(pp, vp)
      norms[metric, "policy"] = optax.global_norm(g_policy)
      norms[metric, "value"] = optax.global_norm(g_value)
    return norms

  norms = {k: float(v) for k, v in grad_norms(params["policy"], params["value"]).items()}
  # The value loss never moves the policy; the policy terms never move the value net
  # (advantages are under stop_gradient, so pg_loss does depend on V numerically).
  assert norms["value_loss", "policy"] == 0.0
  for metric in ("pg_loss", "kl", "entropy"):
    assert norms[metric, "value"] == 0.0
    assert norms[metric, "policy"] > 0.0
  assert norms["value_loss", "value"] > 0.0


# ---------------------------------------------------------------------------------------
# The sharded updates.


def _train(mesh, cfg, params, batches, optimizer):
  state = rl.TrainState.create(distributed.replicate(mesh, params), optimizer,
                               distributed.replicate(mesh, jax.random.key(7)))
  train_step = rl.make_train_step(optimizer, cfg, mesh)
  metrics = []
  for batch in batches:
    state, m = train_step(state, distributed.shard_batch(mesh, batch))
    metrics.append(m)
  return state, metrics


def test_one_and_eight_devices_give_the_same_update():
  if jax.device_count() < 8:
    pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=8")
  cfg = _cfg(kl_coef=0.1, entropy_coef=0.01)
  params = _params(cfg)
  batches = [_batch(16, seed=s, ref_params=params["policy"], cfg=cfg) for s in range(3)]
  optimizer = rl.make_optimizer(policy_lr=1e-2, value_lr=3e-2, max_grad_norm=1.0)
  # On one device the params are already in place: the donated state must not be them.
  state1, metrics1 = _train(distributed.make_mesh(1), cfg, params, batches, optimizer)
  assert not any(x.is_deleted() for x in jax.tree.leaves(params))
  state8, metrics8 = _train(distributed.make_mesh(8), cfg, params, batches, optimizer)
  assert int(state1.step) == int(state8.step) == 3
  leaves = lambda s: jax.tree.leaves(jax.device_get(s.params))
  for a, b in zip(leaves(state1), leaves(state8)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
  for m1, m8 in zip(metrics1, metrics8):
    for name in m1:
      np.testing.assert_allclose(m1[name], m8[name], atol=1e-5, rtol=1e-5, err_msg=name)
  moved = max(np.abs(a - b).max() for a, b in zip(leaves(state8), jax.tree.leaves(params)))
  assert moved > 1e-3  # The update did something.
  assert state8.params["policy"]["mlp_1"]["kernel"].sharding.is_fully_replicated
  assert {"pg_loss", "kl", "entropy", "value_loss", "advantage", "explained_variance",
          "policy_grad_norm", "value_grad_norm", "loss"} <= set(metrics8[0])


def test_update_compiles_once_per_mesh(caplog):
  """A fresh state (single-device arrays) and the updated one (mesh-replicated) must hit one
  executable: a second compile per run would double the learner's start-up."""
  cfg = _cfg()
  optimizer = rl.make_optimizer(1e-3, 1e-3)
  mesh = distributed.make_mesh(1)
  state = rl.TrainState.create(_params(cfg), optimizer, jax.random.key(0))
  train_step = rl.make_train_step(optimizer, cfg, mesh)
  with caplog.at_level("WARNING"), jax.log_compiles():
    for seed in range(3):
      state, _ = train_step(state, _batch(2, seed=seed))
  compiles = [r for r in caplog.records
              if r.getMessage().startswith("Compiling jit(update)")]
  assert len(compiles) == 1


def test_value_baseline_learns_and_the_policy_moves_to_reward():
  """A bandit-like toy: candidate 0 is always the same edit (a fixed action embedding) and
  the reward counts how often it was chosen, plus a user-dependent term the value net can
  see. The baseline should come to explain most of the return variance, and pi(candidate
  0) should rise."""
  cfg = _cfg(kl_coef=0.0, entropy_coef=0.0, value_coef=1.0)
  params = _params(cfg)
  mesh = distributed.make_mesh(min(8, jax.device_count()))
  optimizer = rl.make_optimizer(policy_lr=1e-2, value_lr=1e-2)
  state = rl.TrainState.create(params, optimizer, jax.random.key(0))
  train_step = rl.make_train_step(optimizer, cfg, mesh)
  good_action = np.random.default_rng(4).normal(size=D_A).astype(np.float32)

  def with_good_action(batch):
    actions = batch.actions.copy()
    actions[:, :, 0] = good_action
    return batch.replace(actions=actions, masks=np.ones_like(batch.masks))

  probe = with_good_action(_batch(8, seed=99))

  @jax.jit
  def p_first(policy_params):
    flat = lambda x: x.reshape((-1,) + x.shape[2:])
    logits = nets.batched_logits(cfg.scorer, policy_params, flat(probe.states),
                                 np.repeat(probe.users, H, 0), flat(probe.actions),
                                 flat(probe.masks), np.tile(np.arange(H), 8))
    return jnp.mean(jax.nn.softmax(logits)[:, 0])

  before = float(p_first(params["policy"]))
  rs = np.random.default_rng(5)
  value_losses, explained = [], []
  for i in range(100):
    batch = with_good_action(_batch(16, seed=1000 + i))
    chosen = rs.integers(0, K, size=batch.chosen.shape)
    rewards = np.zeros_like(batch.rewards)
    rewards[:, -1] = (chosen == 0).mean(-1) + 2.0 * batch.users[:, 0]
    batch = batch.replace(chosen=chosen.astype(np.int32), rewards=rewards)
    state, m = train_step(state, batch)
    value_losses.append(float(m["value_loss"]))
    explained.append(float(m["explained_variance"]))
  assert before < 0.3  # About 1/K.
  assert float(p_first(jax.device_get(state.params["policy"]))) > 0.8
  assert np.mean(value_losses[-5:]) < 0.5 * np.mean(value_losses[:5])
  assert np.mean(explained[:3]) < 0.3
  assert np.mean(explained[-5:]) > 0.8


def test_train_step_rejects_bad_batches():
  if jax.device_count() < 8:
    pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=8")
  cfg = _cfg()
  optimizer = rl.make_optimizer(1e-3, 1e-3)
  mesh = distributed.make_mesh(8)
  state = rl.TrainState.create(_params(cfg), optimizer, jax.random.key(0))
  train_step = rl.make_train_step(optimizer, cfg, mesh)
  with pytest.raises(EagleError, match="not divisible by the 8 devices"):
    train_step(state, _batch(12))
  with pytest.raises(EagleError, match="6 steps"):
    train_step(state, _batch(8, horizon=6))


def test_sft_learns_a_target_distribution():
  """Targets per decision: a G-optimal-like distribution on 3 of 5 candidates, chosen by a
  fixed rule the scorer can learn (the sign of <state, action> on their first coordinates)."""
  scorer = nets.ActionScorer(hidden=32, num_steps=4)
  n, k = 32, 5
  rs = np.random.default_rng(11)
  states = rs.normal(size=(n, D_S)).astype(np.float32)
  actions = rs.normal(size=(n, k, D_A)).astype(np.float32)
  affinity = states[:, None, 0] * actions[:, :, 0]  # [n, k]
  rank = np.argsort(np.argsort(-affinity, axis=1), axis=1)
  weights = np.select([rank == 0, rank == 1, rank == 2], [0.5, 0.3, 0.2], 0.0)
  data = rl.SFTBatch(states=states, users=rs.normal(size=(n, D_U)).astype(np.float32),
                     actions=actions, masks=np.ones((n, k), bool),
                     steps=rs.integers(0, 4, size=n).astype(np.int32),
                     targets=weights.astype(np.float32))
  params = nets.init_policy(jax.random.key(0), scorer, state_dim=D_S, user_dim=D_U,
                            action_dim=D_A)
  before = rl.reference_metrics(scorer, params, data)
  # The metric against a direct computation: KL(q || pi) and argmax-in-support.
  logits = nets.batched_logits(scorer, params, data.states, data.users, data.actions,
                               data.masks, data.steps)
  log_pi = jax.nn.log_softmax(logits)
  q = np.asarray(data.targets)
  kl = np.sum(np.where(q > 0, q * (np.log(np.where(q > 0, q, 1)) - log_pi), 0), 1).mean()
  acc = np.mean(q[np.arange(n), np.argmax(logits, 1)] > 0)
  np.testing.assert_allclose(before["kl"], kl, rtol=1e-5)
  np.testing.assert_allclose(before["accuracy"], acc)

  mesh = distributed.make_mesh(min(8, jax.device_count()))
  optimizer = rl.make_sft_optimizer(3e-3)
  state = rl.TrainState.create(params, optimizer, jax.random.key(0))
  sft_step = rl.make_sft_step(optimizer, scorer, mesh)
  for _ in range(300):
    state, m = sft_step(state, data)
  after = rl.reference_metrics(scorer, jax.device_get(state.params), data)
  assert float(after["accuracy"]) == 1.0
  assert float(after["kl"]) < 0.05 < float(before["kl"])
  np.testing.assert_allclose(m["kl"], after["kl"], atol=5e-3)  # Last step's (pre-update) KL.
