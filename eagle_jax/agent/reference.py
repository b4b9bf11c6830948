"""Reference distributions q(x0, u) over candidates and the SFT of the reference network.

Three references (paper §4.3): uniform over all candidates; optimistic (the candidates with
the best predicted next-step utility); G-optimal (a diverse subset picked by the myopic
G-optimal design over the candidates' next-state latents). Each trains the same
`ActionScorer` by cross-entropy; the policy starts from it and is KL-regularised to it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from eagle_jax.agent import nets, rl
from eagle_jax.errors import EagleError

KINDS = ("uniform", "optimistic", "goptimal")


def targets(kind: str, mask: np.ndarray, next_utility: np.ndarray,
            subsets: np.ndarray | None) -> np.ndarray:
  """q [A, K] over each anchor's valid candidates."""
  if kind == "uniform":
    q = mask.astype(np.float32)
  elif kind == "optimistic":  # The best predicted next-step utility (ties share the mass).
    u = np.where(mask, next_utility, -np.inf)
    q = (u == u.max(1, keepdims=True)).astype(np.float32)
  elif kind == "goptimal":
    q = np.zeros(mask.shape, np.float32)
    np.put_along_axis(q, subsets, 1.0, axis=1)
  else:
    raise EagleError(f"config.reference.kind={kind!r}: expected one of {KINDS}")
  return q / q.sum(1, keepdims=True)


def smooth(q: np.ndarray, mask: np.ndarray, epsilon: float) -> np.ndarray:
  """(1 - epsilon) q + epsilon uniform over the valid candidates: label smoothing, so the
  reference never learns that any candidate is impossible."""
  uniform = mask / np.maximum(mask.sum(1, keepdims=True), 1)
  return ((1.0 - epsilon) * q + epsilon * uniform).astype(np.float32)


def sft_batch(states: np.ndarray, users: np.ndarray, candidates: np.ndarray, mask: np.ndarray,
              q: np.ndarray, horizon: int) -> rl.SFTBatch:
  """Every anchor's decision repeated at each step t < H: the reference is myopic, so its
  distribution does not depend on t, and every step embedding it will be asked about is
  trained."""
  rep = lambda x: np.repeat(x, horizon, axis=0)  # noqa: E731
  return rl.SFTBatch(states=jnp.asarray(rep(states)), users=jnp.asarray(rep(users)),
                     actions=jnp.asarray(rep(candidates)), masks=jnp.asarray(rep(mask)),
                     steps=jnp.asarray(np.tile(np.arange(horizon, dtype=np.int32), len(q))),
                     targets=jnp.asarray(rep(q)))


def design_batches(world, table, rows: np.ndarray, subsets: np.ndarray,
                   next_utility: np.ndarray, kind: str, horizon: int,
                   smoothing: float = 0.0) -> tuple[rl.SFTBatch, rl.SFTBatch | None]:
  """(train, held-out) SFT batches of the design's anchors `rows` (with their G-optimal
  `subsets` and one-step `next_utility`) for reference `kind`; held-out is None when the
  design has none."""
  from eagle_jax.environment import features
  q = smooth(targets(kind, table.mask[rows], next_utility, subsets), table.mask[rows],
             smoothing)
  states, users, cands = features.initial_features(world, table)

  def batch(heldout):
    keep = table.heldout[rows] == heldout
    if not keep.any():
      return None
    r = rows[keep]
    return sft_batch(states[r], users[r], cands[r], table.mask[r], q[keep], horizon)

  return batch(heldout=False), batch(heldout=True)


def policy_entropy(world, table, scorer: nets.ActionScorer, params) -> dict:
  """What the reference does at x_0 of EVERY anchor, not only the design's: its mean entropy
  on the training and held-out anchors (RL asks it about all of them), the entropy of a
  uniform pick, and the within-anchor correlation of its logits with the standardised
  predicted-gain feature."""
  from eagle_jax.environment import features
  states, users, cands = features.initial_features(world, table)
  A, K = table.mask.shape
  logits = np.asarray(nets.batched_logits(scorer, params, jnp.asarray(states),
                                          jnp.asarray(users), jnp.asarray(cands),
                                          jnp.asarray(table.mask), jnp.zeros(A, jnp.int32)))
  ent = np.asarray(jax.vmap(rl.entropy)(jnp.asarray(logits), jnp.asarray(table.mask)))
  corr = features.steerability(logits, cands[..., -1], table.mask)["correlation"]
  return {"all_train_entropy": float(ent[~table.heldout].mean()),
          "all_heldout_entropy": float(ent[table.heldout].mean()),
          "uniform_entropy": float(np.log(table.mask.sum(1)).mean()),
          "logit_gain_correlation": corr}


def _pad_to(batch: rl.SFTBatch, multiple: int) -> rl.SFTBatch:
  """Repeats rows so the batch divides the mesh (duplicates weigh rows slightly more)."""
  n = batch.targets.shape[0]
  idx = np.arange(-(-n // multiple) * multiple) % n
  return jax.tree.map(lambda x: x[idx], batch)


def train_reference(scorer: nets.ActionScorer, train: rl.SFTBatch, heldout: rl.SFTBatch | None,
                    *, lr: float, steps: int, mesh, seed: int, weight_decay: float = 0.0,
                    eval_every: int = 25, progress: bool = True):
  """Full-batch SFT of the reference scorer; returns (params, metrics).

  With a held-out batch, the params kept are those of the evaluation (every `eval_every`
  steps) with the lowest held-out KL(q || pi): early stopping, so the reference stays the
  distribution that transfers to anchors it never trained on instead of memorising its own.
  `metrics["best_step"]` says which step that was.
  """
  state_dim, user_dim = train.states.shape[-1], train.users.shape[-1]
  params = nets.init_policy(jax.random.key(seed), scorer, state_dim=state_dim,
                            user_dim=user_dim, action_dim=train.actions.shape[-1])
  optimizer = rl.make_sft_optimizer(lr, weight_decay=weight_decay)
  state = rl.TrainState.create(params, optimizer, jax.random.key(seed))
  step_fn = rl.make_sft_step(optimizer, scorer, mesh)
  batch = _pad_to(train, mesh.shape["data"])
  best_params, best_kl, best_step = None, np.inf, 0
  bar = tqdm.trange(steps, desc="reference SFT", disable=not progress)
  for i in bar:
    state, m = step_fn(state, batch)
    if heldout is not None and ((i + 1) % eval_every == 0 or i == steps - 1):
      kl = float(rl.reference_metrics(scorer, state.params, heldout)["kl"])
      if kl < best_kl:  # A copy: the next step donates the state's buffers.
        best_params, best_kl, best_step = jax.tree.map(jnp.copy, state.params), kl, i + 1
      bar.set_postfix(loss=f"{float(m['loss']):.3f}", heldout_kl=f"{kl:.3f}")
  params = state.params if best_params is None else best_params
  metrics = {f"train_{k}": float(v) for k, v in
             rl.reference_metrics(scorer, params, train).items()}
  if heldout is not None:
    metrics.update({f"heldout_{k}": float(v) for k, v in
                    rl.reference_metrics(scorer, params, heldout).items()})
  metrics["best_step"] = best_step if heldout is not None else steps
  return params, metrics
