"""Pure-functional policy, reference and value networks (flax.linen: params in, values out).

The EAGLE policy scores candidates; it does not write them. For one decision it sees the
state embedding s (MiniLM of the current description and its latent z), the user embedding
u (ALS factor), the K candidates' features A [K, d_a] (the action text's MiniLM embedding
and E_D's reading of the edit, `eagle_jax.environment.features`) with a validity mask, and the step
t < H, and returns one logit per candidate. Why a small MLP over [s, u, a, step, s*a, u*a]
rather than an LLM:

* the three reference policies of the paper are distributions over the per-state candidate
  set, so a scorer gives the exact categorical KL(pi || pi_ref), not a sampled estimate;
* the products s*a and u*a let a shallow net express "this edit moves this description
  towards this user" without learning the interaction from scratch;
* an update is a few small matmuls, so the learner is never the bottleneck next to the
  environment LLM, and no LLM weights sit in the learner.

The reference network and the policy share `ActionScorer` (the policy starts from the
trained reference params). All modules are unbatched; callers batch with `jax.vmap`.
"""

from __future__ import annotations

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

# Logit of a masked candidate: finite, so softmax/KL/entropy stay finite (0 * -inf = nan).
MASKED_LOGIT = -1e9


class ActionScorer(nn.Module):
  """Logits [K] over one state's candidate actions; masked candidates get MASKED_LOGIT.

  Attributes:
    hidden: width of the projections and of the MLP.
    num_steps: the horizon bound; `step` must lie in [0, num_steps).
  """

  hidden: int = 256
  num_steps: int = 8

  @nn.compact
  def __call__(self, state: jax.Array, user: jax.Array, actions: jax.Array,
               mask: jax.Array, step: jax.Array | int) -> jax.Array:
    chex.assert_rank([state, user, actions, mask], [1, 1, 2, 1])
    chex.assert_equal_shape_prefix([actions, mask], 1)
    s = nn.Dense(self.hidden, name="state_proj")(state)
    u = nn.Dense(self.hidden, name="user_proj")(user)
    t = nn.Embed(self.num_steps, self.hidden, name="step_embed")(jnp.asarray(step, jnp.int32))
    a = nn.Dense(self.hidden, name="action_proj")(actions)  # [K, hidden]
    # First layer on [s, u, t, a, s*a, u*a], split so the state's part is computed once
    # rather than once per candidate (the same function as one Dense on the concatenation).
    context = nn.Dense(self.hidden, name="mlp_0_context")(jnp.concatenate([s, u, t]))
    per_candidate = nn.Dense(self.hidden, use_bias=False, name="mlp_0_candidate")(
        jnp.concatenate([a, s * a, u * a], axis=-1))
    x = nn.gelu(context + per_candidate)
    x = nn.gelu(nn.Dense(self.hidden, name="mlp_1")(x))
    # No bias: a shift common to all logits leaves the softmax unchanged, so its gradient
    # is pure rounding noise, which Adam would turn into full-size random steps.
    logits = nn.Dense(1, use_bias=False, name="logit")(x)[:, 0]
    return jnp.where(mask, logits, MASKED_LOGIT)


class ValueNet(nn.Module):
  """V(s, u, t): expected return from state s for user u at step t in [0, num_steps].

  Step num_steps is allowed: the state after the last edit, x_H, has a value too (used
  only when a truncated episode is bootstrapped, see `rl.RLConfig.bootstrap`).
  """

  hidden: int = 256
  num_steps: int = 8

  @nn.compact
  def __call__(self, state: jax.Array, user: jax.Array, step: jax.Array | int) -> jax.Array:
    chex.assert_rank([state, user], 1)
    s = nn.Dense(self.hidden, name="state_proj")(state)
    u = nn.Dense(self.hidden, name="user_proj")(user)
    t = nn.Embed(self.num_steps + 1, self.hidden, name="step_embed")(
        jnp.asarray(step, jnp.int32))
    x = jnp.concatenate([s, u, t, s * u])
    x = nn.gelu(nn.Dense(self.hidden, name="mlp_0")(x))
    x = nn.gelu(nn.Dense(self.hidden, name="mlp_1")(x))
    return nn.Dense(1, name="value")(x)[0]


@functools.partial(jax.jit, static_argnums=1,
                   static_argnames=("state_dim", "user_dim", "action_dim"))
def init_policy(rng: jax.Array, scorer: ActionScorer, *, state_dim: int, user_dim: int,
                action_dim: int) -> dict:
  """Params of an `ActionScorer` (policy or reference) for the given embedding sizes."""
  return scorer.init(rng, jnp.zeros(state_dim), jnp.zeros(user_dim),
                     jnp.zeros((2, action_dim)), jnp.ones(2, bool), 0)["params"]


@functools.partial(jax.jit, static_argnums=1, static_argnames=("state_dim", "user_dim"))
def init_value(rng: jax.Array, value_net: ValueNet, *, state_dim: int, user_dim: int) -> dict:
  """Params of a `ValueNet` for the given embedding sizes."""
  return value_net.init(rng, jnp.zeros(state_dim), jnp.zeros(user_dim), 0)["params"]


@functools.partial(jax.jit, static_argnums=0)
def batched_logits(scorer: ActionScorer, params: dict, states: jax.Array, users: jax.Array,
                   actions: jax.Array, masks: jax.Array, steps: jax.Array) -> jax.Array:
  """Logits [B, K] for B independent decisions (states [B, d_s], actions [B, K, d_a], ...).

  What a rollout needs to sample a_t ~ pi(. | x_t) and to record pi_ref's logits.
  """
  return jax.vmap(lambda s, u, a, m, t: scorer.apply({"params": params}, s, u, a, m, t))(
      states, users, actions, masks, steps)
