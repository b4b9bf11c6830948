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

from eagle_jax import design as design_lib
from eagle_jax import nets, rl
from eagle_jax.errors import EagleError

KINDS = ("uniform", "optimistic", "goptimal")


def design_subsets(z_next: np.ndarray, mask: np.ndarray, cfg, seed: int):
  """The G-optimal subset of each anchor's candidates: (subsets [A, n], per-anchor stats)."""
  n = cfg.subset_size
  X, m = jnp.asarray(z_next), jnp.asarray(mask)
  if cfg.method == "frank_wolfe":
    d = design_lib.batched_design(X, m, eps=cfg.eps, max_iters=cfg.max_iters)
    keys = jax.random.split(jax.random.key(seed), len(z_next))
    subsets = jax.vmap(lambda k, dd: design_lib.select_subset(k, dd, n, cfg.subset))(keys, d)
    stats = dict(converged=np.asarray(d.converged), achieved_eps=np.asarray(d.achieved_eps),
                 rank=np.asarray(d.rank), iterations=np.asarray(d.iterations),
                 support_size=np.asarray(d.support.sum(-1)))
  elif cfg.method == "rejection":
    keys = jax.random.split(jax.random.key(seed), len(z_next))
    results = [design_lib.rejection_design(k, x, mm, n=n, C=cfg.rejection_c)
               for k, x, mm in zip(keys, X, m)]
    subsets = jnp.stack([r.subset_idx for r in results])
    stats = dict(accepted=np.array([bool(r.accepted) for r in results]),
                 tries=np.array([int(r.tries) for r in results]),
                 rank=np.array([int(r.rank) for r in results]))
  else:
    raise EagleError(f"config.design.method={cfg.method!r}: expected 'frank_wolfe' or 'rejection'")
  return np.asarray(subsets), stats


def subset_coverage(z_next: np.ndarray, mask: np.ndarray, subsets: np.ndarray) -> dict:
  """How well uniform weight on each subset covers ALL candidates: mean log det of its
  second-moment matrix and mean max leverage over the candidates (Definition 1's sup)."""
  log_dets, max_levs = [], []
  for X, m, s in zip(z_next, mask, subsets):
    w = np.zeros(len(X), np.float32)
    w[s] = 1.0 / len(s)
    cov = (X[s].T @ X[s]) / len(s)
    log_dets.append(np.linalg.slogdet(cov.astype(np.float64))[1])
    lev = np.asarray(design_lib.leverages(jnp.asarray(X), jnp.asarray(m), jnp.asarray(w)))
    max_levs.append(float(lev[m].max()))
  return {"log_det": float(np.mean(log_dets)), "max_leverage": float(np.median(max_levs))}


def random_subsets(mask: np.ndarray, n: int, seed: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return np.stack([rng.choice(np.flatnonzero(m), size=n, replace=False) for m in mask])


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


def _pad_to(batch: rl.SFTBatch, multiple: int) -> rl.SFTBatch:
  """Repeats rows so the batch divides the mesh (duplicates weigh rows slightly more)."""
  n = batch.targets.shape[0]
  idx = np.arange(-(-n // multiple) * multiple) % n
  return jax.tree.map(lambda x: x[idx], batch)


def train_reference(scorer: nets.ActionScorer, train: rl.SFTBatch, heldout: rl.SFTBatch | None,
                    *, lr: float, steps: int, mesh, seed: int, progress: bool = True):
  """Full-batch SFT of the reference scorer; returns (params, metrics)."""
  state_dim, user_dim = train.states.shape[-1], train.users.shape[-1]
  params = nets.init_policy(jax.random.key(seed), scorer, state_dim=state_dim,
                            user_dim=user_dim, action_dim=train.actions.shape[-1])
  optimizer = rl.make_sft_optimizer(lr)
  state = rl.TrainState.create(params, optimizer, jax.random.key(seed))
  step_fn = rl.make_sft_step(optimizer, scorer, mesh)
  batch = _pad_to(train, mesh.shape["data"])
  bar = tqdm.trange(steps, desc="reference SFT", disable=not progress)
  for i in bar:
    state, m = step_fn(state, batch)
    if i % 50 == 0 or i == steps - 1:  # Reading the loss syncs: not every step.
      bar.set_postfix(loss=f"{float(m['loss']):.3f}")
  metrics = {f"train_{k}": float(v) for k, v in
             rl.reference_metrics(scorer, state.params, train).items()}
  if heldout is not None:
    metrics.update({f"heldout_{k}": float(v) for k, v in
                    rl.reference_metrics(scorer, state.params, heldout).items()})
  return state.params, metrics
