"""EAGLE's learner: KL-regularised REINFORCE with a value baseline and GAE, and reference SFT.

rlax style: every loss is a pure function of ONE episode (or one decision), with chex shape
checks, batched with `jax.vmap`. The objective minimised per episode (paper Eq. 1, App. E.2) is

  sum_t -A_t log pi(a_t | x_t)  +  alpha sum_t KL(pi(.|x_t) || pi_ref(.|x_t))
  - entropy_coef sum_t H(pi(.|x_t))  +  value_coef mean_t (V(x_t) - R_t)^2

with GAE advantages A_t and returns R_t = A_t + V(x_t) held fixed (`stop_gradient`), so the
policy terms never move the value net and the value loss never moves the policy. The KL is
exact: both policies are categorical over the same candidate set.

The policy term uses advantages normalised over the whole batch (`normalize_advantages`):
an offset common to every episode (a value head that has not caught up with the return's
mean) otherwise pushes all chosen logits the same way and collapses the entropy without
any signal. The raw mean advantage is logged (`advantage`): explained variance is blind to
that offset.

The update functions are jitted over a device `Mesh` (batch on the `data` axis, params
replicated); see `make_train_step` for why this is the modern form of a pmapped update.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import chex
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from eagle_jax import distributed
from eagle_jax.agent import nets
from eagle_jax.errors import EagleError


# ----------------------------------------------------------------------------------------
# Pure, unbatched pieces.


def gae(rewards: jax.Array, values: jax.Array, discounts: jax.Array,
        lam: float | jax.Array) -> jax.Array:
  """Generalised advantage estimates [T] for one trajectory (reverse scan).

  Args:
    rewards: r_t [T].
    values: V(x_t) [T + 1]; values[T] is the bootstrap value of the state after the last step.
    discounts: gamma_t [T] (0 where the episode terminates).
    lam: the GAE lambda.
  """
  chex.assert_rank([rewards, values, discounts], 1)
  chex.assert_equal_shape([rewards, discounts])
  chex.assert_axis_dimension(values, 0, rewards.shape[0] + 1)
  deltas = rewards + discounts * values[1:] - values[:-1]

  def backward(next_advantage, delta_and_discount):
    delta, discount = delta_and_discount
    advantage = delta + discount * lam * next_advantage
    return advantage, advantage

  _, advantages = jax.lax.scan(backward, jnp.zeros((), deltas.dtype), (deltas, discounts),
                               reverse=True)
  return advantages


def _masked_log_softmax(logits: jax.Array, mask: jax.Array) -> jax.Array:
  return jax.nn.log_softmax(jnp.where(mask, logits, nets.MASKED_LOGIT))


def categorical_kl(logits_p: jax.Array, logits_q: jax.Array, mask: jax.Array) -> jax.Array:
  """Exact KL(p || q) of two categoricals over the valid (mask) candidates of one state."""
  chex.assert_rank([logits_p, logits_q, mask], 1)
  chex.assert_equal_shape([logits_p, logits_q, mask])
  log_p = _masked_log_softmax(logits_p, mask)
  log_q = _masked_log_softmax(logits_q, mask)
  return jnp.sum(jnp.where(mask, jnp.exp(log_p) * (log_p - log_q), 0.0))


def entropy(logits: jax.Array, mask: jax.Array) -> jax.Array:
  """Entropy of the categorical over the valid (mask) candidates of one state."""
  chex.assert_rank([logits, mask], 1)
  chex.assert_equal_shape([logits, mask])
  log_p = _masked_log_softmax(logits, mask)
  return -jnp.sum(jnp.where(mask, jnp.exp(log_p) * log_p, 0.0))


def cross_entropy(targets: jax.Array, logits: jax.Array, mask: jax.Array) -> jax.Array:
  """-sum_a q_a log pi_a for a target distribution q [K] (zero off the mask)."""
  chex.assert_rank([targets, logits, mask], 1)
  chex.assert_equal_shape([targets, logits, mask])
  log_p = _masked_log_softmax(logits, mask)
  return -jnp.sum(jnp.where(mask & (targets > 0), targets * log_p, 0.0))


def _target_entropy(targets: jax.Array) -> jax.Array:
  safe = jnp.where(targets > 0, targets, 1.0)  # 0 log 0 = 0 without a nan gradient.
  return -jnp.sum(targets * jnp.log(safe))


# ----------------------------------------------------------------------------------------
# Data.


@chex.dataclass(frozen=True)
class Batch:
  """B episodes of H steps over K candidates; step t of an episode is implied by its index.

  Attributes:
    states: [B, H, d_s] the state x_t at each step, before acting.
    final_states: [B, d_s] x_H, the state after the last edit (scored by the reward). Its
      value is 0 (the episode terminates at H) unless `RLConfig.bootstrap` is set.
    users: [B, d_u] the user each episode personalises for.
    actions: [B, H, K, d_a] candidate action embeddings at each step.
    masks: [B, H, K] bool, valid candidates.
    chosen: [B, H] int, index of the action taken.
    rewards: [B, H] r_t; EAGLE's terminal reward is U(E_D(x_H); u) at t = H - 1 and 0 before,
      but per-step utility differences work as well.
    ref_logits: [B, H, K] the frozen reference policy's logits at each step.
  """

  states: chex.Array
  final_states: chex.Array
  users: chex.Array
  actions: chex.Array
  masks: chex.Array
  chosen: chex.Array
  rewards: chex.Array
  ref_logits: chex.Array


@chex.dataclass(frozen=True)
class SFTBatch:
  """B decisions with a target distribution q over the candidates (reference-policy SFT).

  Attributes:
    states: [B, d_s]; users: [B, d_u]; actions: [B, K, d_a]; masks: [B, K] bool;
    steps: [B] int; targets: [B, K] q, summing to 1 over the valid candidates (uniform,
      optimistic one-hot/multi-hot, or a G-optimal design).
  """

  states: chex.Array
  users: chex.Array
  actions: chex.Array
  masks: chex.Array
  steps: chex.Array
  targets: chex.Array


@dataclasses.dataclass(frozen=True)
class RLConfig:
  """The networks and the loss coefficients of the policy-gradient update.

  Attributes:
    scorer: the policy's (and reference's) architecture.
    value_net: the value network's architecture.
    gamma: discount.
    gae_lambda: GAE lambda (1: Monte-Carlo returns minus the baseline; 0: one-step TD).
    kl_coef: alpha, weight of KL(pi || pi_ref) summed over the steps of an episode.
    entropy_coef: weight of the entropy bonus (summed over steps).
    value_coef: weight of the value MSE (mean over steps).
    bootstrap: False (EAGLE): x_H is terminal and V(x_H) = 0. True: the episode was
      truncated at H and V(x_H) bootstraps the remainder.
    normalize_advantages: scale the policy term's advantages to zero mean and unit
      standard deviation over the batch (the value target keeps the raw returns).
  """

  scorer: nets.ActionScorer
  value_net: nets.ValueNet
  gamma: float = 1.0
  gae_lambda: float = 0.95
  kl_coef: float = 0.1
  entropy_coef: float = 0.0
  value_coef: float = 0.5
  bootstrap: bool = False
  normalize_advantages: bool = True


@flax.struct.dataclass
class TrainState:
  """Everything an update changes. For RL, params = {"policy": ..., "value": ...}; for SFT,
  the scorer's params. rng is the rollout key, carried so a checkpoint resumes the stream."""

  params: Any
  opt_state: Any
  step: jax.Array
  rng: jax.Array

  @classmethod
  def create(cls, params: Any, optimizer: optax.GradientTransformation,
             rng: jax.Array) -> TrainState:
    """A fresh state that owns copies of `params` and `rng`: updates donate the state, and
    the caller's arrays (e.g. the reference params the policy starts from) must survive."""
    params, rng = jax.tree.map(lambda x: x.copy(), (params, rng))
    return cls(params=params, opt_state=optimizer.init(params),
               step=jnp.zeros((), jnp.int32), rng=rng)


# ----------------------------------------------------------------------------------------
# Losses.


def episode_advantages(value_params: Any, episode: Batch,
                       cfg: RLConfig) -> tuple[jax.Array, jax.Array]:
  """(values V(x_t) [H], GAE advantages A_t [H]) of ONE episode; the advantages carry no
  gradient."""
  horizon = episode.chosen.shape[0]
  steps = jnp.arange(horizon)
  values = jax.vmap(
      lambda s, t: cfg.value_net.apply({"params": value_params}, s, episode.users, t)
  )(episode.states, steps)
  if cfg.bootstrap:
    final_value = cfg.value_net.apply({"params": value_params}, episode.final_states,
                                      episode.users, horizon)
  else:
    final_value = jnp.zeros((), values.dtype)
  all_values = jax.lax.stop_gradient(jnp.concatenate([values, final_value[None]]))
  discounts = jnp.full((horizon,), cfg.gamma, values.dtype)
  advantages = jax.lax.stop_gradient(
      gae(episode.rewards, all_values, discounts, cfg.gae_lambda))
  return values, advantages


def episode_loss(policy_params: Any, value_params: Any, episode: Batch, cfg: RLConfig,
                 advantage_shift: jax.Array | float = 0.0,
                 advantage_scale: jax.Array | float = 1.0
                 ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Loss of ONE episode (a `Batch` row: states [H, d_s], ...) and its diagnostics.

  The policy term uses (A_t - advantage_shift) / advantage_scale: the batch's advantage
  statistics when `cfg.normalize_advantages` (see `make_train_step`); the value target is
  the raw return. The reference logits travel with the episode (`episode.ref_logits`),
  precomputed by the frozen reference network when the rollout was recorded.
  """
  chex.assert_rank([episode.states, episode.actions, episode.masks, episode.chosen,
                    episode.rewards, episode.ref_logits], [2, 3, 2, 1, 1, 2])
  chex.assert_equal_shape([episode.masks, episode.ref_logits])
  chex.assert_equal_shape_prefix([episode.states, episode.actions, episode.masks,
                                  episode.chosen, episode.rewards], 1)
  steps = jnp.arange(episode.chosen.shape[0])
  logits = jax.vmap(
      lambda s, a, m, t: cfg.scorer.apply({"params": policy_params}, s, episode.users, a, m, t)
  )(episode.states, episode.actions, episode.masks, steps)
  values, advantages = episode_advantages(value_params, episode, cfg)
  returns = advantages + jax.lax.stop_gradient(values)
  policy_advantages = (advantages - advantage_shift) / advantage_scale

  log_probs = jax.vmap(_masked_log_softmax)(logits, episode.masks)
  chosen_log_probs = jnp.take_along_axis(log_probs, episode.chosen[:, None], axis=-1)[:, 0]
  pg_loss = -jnp.sum(policy_advantages * chosen_log_probs)
  kl = jnp.sum(jax.vmap(categorical_kl)(logits, episode.ref_logits, episode.masks))
  ent = jnp.sum(jax.vmap(entropy)(logits, episode.masks))
  value_loss = jnp.mean(jnp.square(values - returns))
  loss = (pg_loss + cfg.kl_coef * kl - cfg.entropy_coef * ent + cfg.value_coef * value_loss)
  metrics = {
      "pg_loss": pg_loss, "kl": kl, "entropy": ent, "value_loss": value_loss,
      # The raw mean: a value head lagging the return's mean shows here, not in the
      # explained variance.
      "advantage": jnp.mean(advantages), "episode_return": jnp.sum(episode.rewards),
      "values": values, "returns": returns,  # [H]: explained variance is a batch statistic.
  }
  return loss, metrics


def sft_loss(params: Any, item: SFTBatch, scorer: nets.ActionScorer
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Cross-entropy of ONE decision's target q under the scorer; KL(q || pi), accuracy and
  the entropy of pi (a reference that generalises stays near its targets' entropy on
  anchors it never trained on, rather than turning confident and arbitrary)."""
  logits = scorer.apply({"params": params}, item.states, item.users, item.actions,
                        item.masks, item.steps)
  ce = cross_entropy(item.targets, logits, item.masks)
  accuracy = (item.targets[jnp.argmax(logits)] > 0).astype(jnp.float32)
  return ce, {"kl": ce - _target_entropy(item.targets), "accuracy": accuracy,
              "entropy": entropy(logits, item.masks)}


# ----------------------------------------------------------------------------------------
# Optimisers and the sharded updates.


def _clipped_adam(learning_rate: float, max_grad_norm: float) -> optax.GradientTransformation:
  return optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adam(learning_rate))


def make_optimizer(policy_lr: float, value_lr: float,
                   max_grad_norm: float = 1.0) -> optax.GradientTransformation:
  """Adam with separate learning rates (paper Table 7) for params {"policy", "value"}.

  Each network's gradient is clipped by its own global norm, so a large value-loss
  gradient early in training cannot shrink the policy's step.
  """
  return optax.multi_transform(
      {"policy": _clipped_adam(policy_lr, max_grad_norm),
       "value": _clipped_adam(value_lr, max_grad_norm)},
      param_labels=lambda params: {name: jax.tree.map(lambda _: name, tree)
                                   for name, tree in params.items()})


def make_sft_optimizer(learning_rate: float, max_grad_norm: float = 1.0,
                       weight_decay: float = 0.0) -> optax.GradientTransformation:
  """AdamW with global-norm clipping for the reference network's SFT: the decay keeps a
  reference fit on a few design anchors from memorising them."""
  return optax.chain(optax.clip_by_global_norm(max_grad_norm),
                     optax.adamw(learning_rate, weight_decay=weight_decay))


def _explained_variance(values: jax.Array, returns: jax.Array) -> jax.Array:
  """1 - Var(R - V) / Var(R): 1 is a perfect baseline, 0 no better than a constant."""
  var_returns = jnp.var(returns)
  return jnp.where(var_returns > 1e-12,
                   1.0 - jnp.var(returns - values) / jnp.maximum(var_returns, 1e-12), 0.0)


def _jit_over_mesh(update: Callable, mesh: Mesh, batch_size: Callable[[Any], int],
                   check: Callable[[Any], None] | None = None) -> Callable:
  """Jits `update(state, batch)` with the batch on the `data` axis and the state
  replicated and donated; the returned function checks the batch and waits for the result.
  Its `lower(state, batch)` checks abstract arguments (`jax.ShapeDtypeStruct`s) and lowers
  the update for them: the ahead-of-time compile check (`python -m eagle_jax compile`).
  """
  replicated = NamedSharding(mesh, P())
  jitted = jax.jit(update, in_shardings=(replicated, NamedSharding(mesh, P("data"))),
                   out_shardings=(replicated, replicated), donate_argnums=0)
  num_shards = mesh.shape["data"]

  def check_batch(batch: Any) -> None:
    size = batch_size(batch)
    if size % num_shards:
      raise EagleError(f"batch size {size} is not divisible by the {num_shards} devices of "
                       f"the mesh's data axis (set the batch size to a multiple of it)")
    if check is not None:
      check(batch)

  def lower(state: Any, batch: Any) -> jax.stages.Lowered:
    check_batch(batch)
    return jitted.lower(state, batch)

  def step(state: TrainState, batch: Any) -> tuple[TrainState, dict[str, jax.Array]]:
    check_batch(batch)
    # Outputs come back replicated on the mesh; placing a fresh state there too keeps the
    # first and later calls on one compiled executable (a no-op once it is there).
    state = distributed.replicate(mesh, state)
    # Block: the update is tiny next to a rollout, and on fake CPU devices a loop of
    # unblocked sharded steps can deadlock in XLA's CPU all-reduce.
    return jax.block_until_ready(jitted(state, batch))

  step.lower = lower
  return step


def make_train_step(optimizer: optax.GradientTransformation, cfg: RLConfig,
                    mesh: Mesh) -> Callable[[TrainState, Batch],
                                            tuple[TrainState, dict[str, jax.Array]]]:
  """The policy/value update `train_step(state, batch) -> (state, metrics)`.

  This is the modern form of a pmapped update. Instead of `jax.pmap` over replicated
  params and a per-device batch with an explicit `pmean` of the gradients, ONE `jax.jit`
  takes the global batch sharded on the mesh's `data` axis (`NamedSharding(mesh,
  P("data"))`) and the replicated train state; XLA partitions the computation and inserts
  the gradient all-reduce itself. Since JAX 0.8, pmap is in maintenance mode and is itself
  implemented on top of jit + shard_map, so this is what a pmapped update compiles to, minus
  the per-device bookkeeping; it runs unchanged on 1 device, 8 fake CPU devices or a pod.

  The state argument is donated: do not reuse it after the call (`TrainState.create`
  copies the arrays it is given, so the caller's stay valid). Metrics are batch means,
  plus the explained variance of the value baseline and the two gradient norms.
  """

  def update(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
    shift, scale = 0.0, 1.0
    if cfg.normalize_advantages:
      _, advantages = jax.vmap(
          lambda episode: episode_advantages(state.params["value"], episode, cfg))(batch)
      shift, scale = jnp.mean(advantages), jnp.std(advantages) + 1e-6

    def loss_fn(params):
      losses, per_episode = jax.vmap(
          lambda episode: episode_loss(params["policy"], params["value"], episode, cfg,
                                       shift, scale)
      )(batch)
      return jnp.mean(losses), per_episode

    (loss, per_episode), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    values, returns = per_episode.pop("values"), per_episode.pop("returns")
    metrics = {name: jnp.mean(value) for name, value in per_episode.items()}
    metrics.update(
        loss=loss,
        explained_variance=_explained_variance(values.ravel(), returns.ravel()),
        policy_grad_norm=optax.global_norm(grads["policy"]),
        value_grad_norm=optax.global_norm(grads["value"]))
    return state.replace(params=params, opt_state=opt_state, step=state.step + 1), metrics

  def check(batch: Batch) -> None:
    horizon = batch.chosen.shape[1]
    if horizon > cfg.scorer.num_steps or horizon > cfg.value_net.num_steps:
      raise EagleError(f"episodes have {horizon} steps but the networks embed at most "
                       f"{cfg.scorer.num_steps} (scorer) / {cfg.value_net.num_steps} (value) "
                       f"steps: raise num_steps in the network config")

  return _jit_over_mesh(update, mesh, lambda batch: batch.chosen.shape[0], check)


def make_sft_step(optimizer: optax.GradientTransformation, scorer: nets.ActionScorer,
                  mesh: Mesh) -> Callable[[TrainState, SFTBatch],
                                          tuple[TrainState, dict[str, jax.Array]]]:
  """The reference-network update `sft_step(state, batch) -> (state, metrics)`: minimises the
  cross-entropy to the targets q, jitted over the mesh like `make_train_step`. Steps in the
  batch must be < scorer.num_steps (values are not checked: that would cost a device sync)."""

  def update(state: TrainState, batch: SFTBatch) -> tuple[TrainState, dict[str, jax.Array]]:
    def loss_fn(params):
      losses, per_item = jax.vmap(lambda item: sft_loss(params, item, scorer))(batch)
      return jnp.mean(losses), per_item

    (loss, per_item), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {name: jnp.mean(value) for name, value in per_item.items()}
    metrics.update(loss=loss, grad_norm=optax.global_norm(grads))
    return state.replace(params=params, opt_state=opt_state, step=state.step + 1), metrics

  return _jit_over_mesh(update, mesh, lambda batch: batch.targets.shape[0])


@functools.partial(jax.jit, static_argnums=0)
def reference_metrics(scorer: nets.ActionScorer, params: Any,
                      data: SFTBatch) -> dict[str, jax.Array]:
  """How well a (reference) scorer matches its targets: accuracy = argmax pi lies in the
  support of q; kl = KL(q || pi); both averaged over the decisions in `data`."""
  _, per_item = jax.vmap(lambda item: sft_loss(params, item, scorer))(data)
  return {name: jnp.mean(value) for name, value in per_item.items()}
