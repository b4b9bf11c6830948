"""Per-anchor candidate subsets from the G-optimal design, random ones to compare with, and
how well a subset covers all of an anchor's candidates."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from eagle_jax.design import goptimal as design_lib
from eagle_jax.errors import EagleError


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
