"""Policy/reference scorer and value network: shapes, masking, symmetry, batching."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from eagle_jax.agent import nets

D_S, D_U, D_A, K = 6, 3, 5, 4


def _inputs(seed=0):
  ks = jax.random.split(jax.random.key(seed), 3)
  state = jax.random.normal(ks[0], (D_S,))
  user = jax.random.normal(ks[1], (D_U,))
  actions = jax.random.normal(ks[2], (K, D_A))
  mask = jnp.array([True, True, False, True])
  return state, user, actions, mask


def _scorer():
  scorer = nets.ActionScorer(hidden=16, num_steps=5)
  params = nets.init_policy(jax.random.key(1), scorer, state_dim=D_S, user_dim=D_U,
                            action_dim=D_A)
  return scorer, params


def test_init_shapes():
  scorer, params = _scorer()
  assert params["state_proj"]["kernel"].shape == (D_S, 16)
  assert params["user_proj"]["kernel"].shape == (D_U, 16)
  assert params["action_proj"]["kernel"].shape == (D_A, 16)
  assert params["step_embed"]["embedding"].shape == (5, 16)
  value_params = nets.init_value(jax.random.key(2), nets.ValueNet(hidden=8, num_steps=5),
                                 state_dim=D_S, user_dim=D_U)
  # The value net embeds steps 0..H: the final state x_H has a value too.
  assert value_params["step_embed"]["embedding"].shape == (6, 8)


def test_masked_candidates_get_a_finite_floor():
  scorer, params = _scorer()
  state, user, actions, mask = _inputs()
  logits = scorer.apply({"params": params}, state, user, actions, mask, 2)
  assert logits.shape == (K,)
  assert logits[2] == nets.MASKED_LOGIT
  assert np.all(np.isfinite(logits))
  probs = jax.nn.softmax(logits)
  assert probs[2] == 0.0
  np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-6)


def test_candidates_are_scored_independently_of_their_order():
  scorer, params = _scorer()
  state, user, actions, mask = _inputs()
  perm = jnp.array([3, 0, 2, 1])
  logits = scorer.apply({"params": params}, state, user, actions, mask, 1)
  permuted = scorer.apply({"params": params}, state, user, actions[perm], mask[perm], 1)
  np.testing.assert_allclose(permuted, logits[perm], rtol=1e-6)


def test_logits_depend_on_user_and_step():
  scorer, params = _scorer()
  state, user, actions, mask = _inputs()
  base = scorer.apply({"params": params}, state, user, actions, mask, 0)
  other_user = scorer.apply({"params": params}, state, -user, actions, mask, 0)
  other_step = scorer.apply({"params": params}, state, user, actions, mask, 3)
  assert np.abs(np.asarray(base - other_user))[mask].max() > 1e-4
  assert np.abs(np.asarray(base - other_step))[mask].max() > 1e-4


def test_batched_logits_match_single_calls():
  scorer, params = _scorer()
  rows = [_inputs(seed) for seed in range(3)]
  states, users, actions, masks = (jnp.stack(x) for x in zip(*rows))
  steps = jnp.array([0, 2, 4])
  batched = nets.batched_logits(scorer, params, states, users, actions, masks, steps)
  assert batched.shape == (3, K)
  for i, (s, u, a, m) in enumerate(rows):
    single = scorer.apply({"params": params}, s, u, a, m, int(steps[i]))
    # 1e-3: GPUs run float32 matmuls in TF32 by default; a mixed-up row is off by O(0.1).
    np.testing.assert_allclose(batched[i], single, rtol=1e-3, atol=1e-3)


def test_value_net_is_scalar_at_every_step_including_the_last():
  value_net = nets.ValueNet(hidden=8, num_steps=3)
  params = nets.init_value(jax.random.key(0), value_net, state_dim=D_S, user_dim=D_U)
  state, user, _, _ = _inputs()
  values = [value_net.apply({"params": params}, state, user, t) for t in range(4)]
  assert all(v.shape == () and np.isfinite(v) for v in values)
  assert len({float(v) for v in values}) == 4  # The step embedding matters.
