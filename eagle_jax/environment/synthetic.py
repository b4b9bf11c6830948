"""A synthetic environment with a known, tunable signal: the learner's unit of truth.

Same anchors, candidates, features, networks and train loop as the LLM environment, but no
LLM. The next state's text embedding is the literal edit that the policy's features read,
plus noise:

    emb' = unit(emb + a + sigma * xi),   xi ~ N(0, I / d), fixed per (state text, action),

so E_D(emb') is the features' prediction z_hat = E_D(unit(emb + a)) blurred by noise.
`calibrated` sets sigma so that, over the table's anchors at x_0, the within-anchor
correlation between the standardised predicted gain (the policy's best feature) and the
real one-step utility gain is rho: rho = 1, the feature is the outcome; rho -> 0, the
action's effect is unpredictable from anything the policy sees. The noise is a fixed
function of (text, action), so the environment is deterministic like a greedy LLM, and
policies compared on the same anchors see the same outcomes.

Run it before spending accelerator time: a learner that cannot beat random here at
rho = 0.3 will not find the weaker signal of a real environment (`python -m eagle_jax
synthetic`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Callable, Sequence

import numpy as np

from eagle_jax.environment import features
from eagle_jax.environment.rewrite import RewriteResult
from eagle_jax.errors import EagleError


def _unit(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-9)


@dataclasses.dataclass(frozen=True)
class SyntheticEnvironment:
  """x_{t+1} = x_t edited by a: the literal edit in embedding space plus fixed noise.

  Attributes:
    sigma: the noise scale (`calibrated` derives it from a target rho).
    seed: which fixed noise field.
    stats: what the calibration measured (rho, oracle and predicted gains).
  """

  sigma: float
  seed: int = 0
  stats: dict = dataclasses.field(default_factory=dict)

  def noise(self, texts: Sequence[str], actions: Sequence[str], dim: int) -> np.ndarray:
    """xi [B, dim] for each (text, action): a stable hash seeds each row."""
    rows = []
    for text, action in zip(texts, actions):
      digest = hashlib.sha256(f"{self.seed}\0{text}\0{action}".encode()).digest()
      rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
      rows.append(rng.standard_normal(dim))
    return (np.stack(rows) / np.sqrt(dim)).astype(np.float32)

  def next_embeddings(self, emb: np.ndarray, action_emb: np.ndarray,
                      noise: np.ndarray) -> np.ndarray:
    return _unit(emb + action_emb + self.sigma * noise).astype(np.float32)

  def transition(self, texts: Sequence[str], actions: Sequence[str], context=None, *,
                 seed: int, emb: np.ndarray, action_emb: np.ndarray,
                 embed: Callable) -> tuple[RewriteResult, np.ndarray]:
    """One step for a batch (the `EnvironmentLLM.transition` interface; `seed`, `context`
    and `embed` are unused: the outcome is a fixed function of the state and the action)."""
    del seed, context, embed
    if len(texts) != len(actions) or len(texts) != len(emb):
      raise EagleError(f"synthetic step needs one action and embedding per state; got "
                       f"{len(texts)} states, {len(actions)} actions, {len(emb)} embeddings")
    new = self.next_embeddings(emb, action_emb, self.noise(texts, actions, emb.shape[1]))
    next_texts = [f"{t} | {a}" for t, a in zip(texts, actions)]
    return RewriteResult(texts=next_texts, degenerate=[None] * len(texts), raw=next_texts), new

  @classmethod
  def calibrated(cls, world, table, rho: float, seed: int = 0,
                 iterations: int = 40) -> SyntheticEnvironment:
    """The environment whose one-step gains correlate `rho` with the predicted-gain feature
    over the table's anchors at x_0 (bisection on log sigma)."""
    if not 0.0 < rho <= 1.0:
      raise EagleError(f"config.env.synthetic_rho={rho}: expected a correlation in (0, 1]")
    one_step = _OneStep(world, table, seed)
    if rho >= one_step.correlation(0.0):
      sigma = 0.0
    else:
      lo, hi = -6.0, 4.0  # log10 sigma: from no noise to noise that drowns any edit.
      for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if one_step.correlation(10 ** mid) > rho else (lo, mid)
      sigma = 10 ** (0.5 * (lo + hi))
    return cls(sigma=sigma, seed=seed, stats=one_step.steerability(sigma) | {"sigma": sigma})


class _OneStep:
  """Every candidate of every anchor applied once to x_0, for any sigma (noise drawn once)."""

  def __init__(self, world, table, seed: int):
    self.world, self.mask = world, table.mask
    A, K = table.mask.shape
    self.rows, self.cols = np.nonzero(table.mask)
    emb = world.text_emb[table.items]
    texts = [world.text(table.items[a]) for a in self.rows]
    actions = [table.actions[a][k] for a, k in zip(self.rows, self.cols)]
    self.emb, self.action_emb = emb[self.rows], table.action_emb[self.rows, self.cols]
    self.env = SyntheticEnvironment(0.0, seed)
    self.xi = self.env.noise(texts, actions, emb.shape[1])
    self.users = features.user_features(world, table)[self.rows]
    self.anchor_items = table.items[self.rows]
    utility = world.utility_fn()
    self.utility = lambda z: np.asarray(utility(z, self.users, self.anchor_items)[0])
    self.u_now = self.utility(world.latent_of_embedding(self.emb))
    self.predicted = features.initial_features(world, table)[2][..., -1]
    self.shape = (A, K)

  def gains(self, sigma: float) -> np.ndarray:
    env = dataclasses.replace(self.env, sigma=sigma)
    z = self.world.latent_of_embedding(env.next_embeddings(self.emb, self.action_emb, self.xi))
    out = np.zeros(self.shape, np.float32)
    out[self.rows, self.cols] = self.utility(z) - self.u_now
    return out

  def steerability(self, sigma: float) -> dict:
    s = features.steerability(self.predicted, self.gains(sigma), self.mask)
    return {"rho": s["correlation"], "oracle_gain": s["oracle_gain"],
            "predicted_gain": s["predicted_gain"]}

  def correlation(self, sigma: float) -> float:
    return self.steerability(sigma)["rho"]
