"""Episodes in the EAGLE MDP: the host-side loop around the environment LLM, E_D and U.

State x_t is a description; the policy picks one of the anchor's candidate actions; the
environment LLM rewrites all B descriptions of a batch in one batched, sharded call; E_D
embeds them; the utility scores the final description x_H (terminal reward) or each step's
change (delta reward). Policies are `choose(t, state_features, anchors) -> actions` callables,
so the trained policy, the reference, random and greedy baselines share one loop: a
policy sees (step t, state features [B, d_s], anchors [B], current texts [B]).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from eagle_jax import nets

Choose = Callable[[int, np.ndarray, np.ndarray, list[str]], np.ndarray]


@dataclasses.dataclass
class Episodes:
  """B episodes of horizon H (arrays are numpy, batch first)."""
  anchors: np.ndarray       # [B] rows of the CandidateTable
  states: np.ndarray        # [B, H+1, d_s] state features of x_0..x_H
  chosen: np.ndarray        # [B, H] action index taken at each step
  z: np.ndarray             # [B, H+1, d] E_D latent of x_0..x_H
  utility: np.ndarray       # [B, H+1] U of x_0..x_H (total)
  rating: np.ndarray        # [B, H+1] the <z_u, z> term
  distance: np.ndarray      # [B, H+1] the lambda * kNN-distance term
  texts: list[list[str]]    # [B][H+1] descriptions
  degenerate: int           # rewrites flagged degenerate (kept the previous text)
  llm_s: float              # wall time inside the environment LLM
  llm_tokens: int = 0

  def rewards(self, mode: str) -> np.ndarray:
    """[B, H]: terminal U(x_H) at t = H-1 (EAGLE), or per-step differences U(x_t+1) - U(x_t)."""
    if mode == "delta":
      return np.diff(self.utility, axis=1)
    r = np.zeros(self.chosen.shape, np.float32)
    r[:, -1] = self.utility[:, -1]
    return r


def state_features(prepared, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(features [N, 384 + d], z [N, d]): a state is its text embedding and its E_D latent."""
  z = prepared.latent_of_embedding(emb)
  return np.concatenate([emb, z], axis=-1).astype(np.float32), z


def feature_dims(prepared, table) -> dict[str, int]:
  """Input sizes of the scorer and value networks."""
  return dict(state_dim=prepared.text_emb.shape[1] + prepared.item_z.shape[1],
              user_dim=prepared.user_z.shape[1])


def user_features(prepared, table) -> np.ndarray:
  """[A, d]: the ALS factor of each anchor's user."""
  return prepared.user_z[[prepared.user_row(u) for u in table.user_ids]]


class EpisodeRunner:
  """Runs batches of episodes from anchors of a CandidateTable in the real environment."""

  def __init__(self, prepared, table, env, *, horizon: int, personalise: bool):
    self.prepared = prepared
    self.table = table
    self.env = env
    self.horizon = horizon
    self.personalise = personalise
    self._utility = prepared.utility_fn()
    self.users = user_features(prepared, table)

  def state_features(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return state_features(self.prepared, emb)

  def score(self, z: np.ndarray, anchors: np.ndarray):
    total, rating, distance = self._utility(jnp.asarray(z), jnp.asarray(self.users[anchors]),
                                            jnp.asarray(self.table.items[anchors]))
    return np.asarray(total), np.asarray(rating), np.asarray(distance)

  def step(self, texts: list[str], anchors: np.ndarray, chosen: np.ndarray, seed: int):
    """One environment transition for a batch: rewrite, then embed."""
    actions = [self.table.actions[a][i] for a, i in zip(anchors, chosen)]
    context = [self.table.profiles[a] for a in anchors] if self.personalise else None
    start = time.perf_counter()
    result = self.env.rewrite(texts, actions, context, seed=seed)
    llm_s = time.perf_counter() - start
    emb = self.prepared.embed_text(result.texts)
    return result, emb, llm_s

  def run(self, anchors: np.ndarray, choose: Choose, seed: int) -> Episodes:
    anchors = np.asarray(anchors)
    B, H = len(anchors), self.horizon
    texts = [[self.prepared.text(self.table.items[a])] for a in anchors]
    emb = self.prepared.text_emb[self.table.items[anchors]]
    feats, z = self.state_features(emb)
    all_feats, all_z, chosen = [feats], [z], np.zeros((B, H), np.int32)
    degenerate, llm_s, tokens = 0, 0.0, 0
    for t in range(H):
      chosen[:, t] = choose(t, feats, anchors, [x[-1] for x in texts])
      # Common random numbers: the same (seed, step) for every policy compared.
      result, emb, dt = self.step([x[-1] for x in texts], anchors, chosen[:, t],
                                  seed=seed * 1000 + t)
      llm_s += dt
      tokens += result.tokens
      degenerate += sum(r is not None for r in result.degenerate)
      for x, new in zip(texts, result.texts):
        x.append(new)
      feats, z = self.state_features(emb)
      all_feats.append(feats)
      all_z.append(z)
    z = np.stack(all_z, 1)
    total, rating, distance = self.score(z.reshape(B * (H + 1), -1),
                                         np.repeat(anchors, H + 1))
    shape = (B, H + 1)
    return Episodes(anchors=anchors, states=np.stack(all_feats, 1), chosen=chosen, z=z,
                    utility=total.reshape(shape), rating=rating.reshape(shape),
                    distance=distance.reshape(shape), texts=texts, degenerate=degenerate,
                    llm_s=llm_s, llm_tokens=tokens)

  def one_step_all(self, anchors: np.ndarray, seed: int):
    """Every candidate of each anchor applied once to x_0: the design's next states.

    Returns (z_next [A, K, d], utility [A, K], texts [A][K]); padded candidates get zeros.
    """
    anchors = np.asarray(anchors)
    K = self.table.mask.shape[1]
    pairs = [(a, i) for a in anchors for i in range(K) if self.table.mask[a, i]]
    texts = [self.prepared.text(self.table.items[a]) for a, _ in pairs]
    pa = np.array([a for a, _ in pairs])
    result, emb, _ = self.step(texts, pa, np.array([i for _, i in pairs]), seed=seed)
    _, z = self.state_features(emb)
    total, _, _ = self.score(z, pa)
    z_next = np.zeros((len(anchors), K, z.shape[1]), np.float32)
    utility = np.zeros((len(anchors), K), np.float32)
    out_texts = [[""] * K for _ in anchors]
    row = {a: j for j, a in enumerate(anchors)}
    for (a, i), zi, ui, ti in zip(pairs, z, total, result.texts):
      z_next[row[a], i], utility[row[a], i], out_texts[row[a]][i] = zi, ui, ti
    return z_next, utility, out_texts


# Policies -------------------------------------------------------------------------------


def scorer_policy(scorer: nets.ActionScorer, params, runner: EpisodeRunner, *,
                  greedy: bool, rng: jax.Array | None = None,
                  record: list | None = None) -> Choose:
  """pi(a | x_t, u) from an ActionScorer: sampled (training) or argmax (evaluation).

  `record` collects each step's logits, e.g. the reference's for the KL term.
  """
  keys = [rng]

  def choose(t, feats, anchors, texts):
    del texts  # The scorer sees the text through its embedding.
    logits = nets.batched_logits(
        scorer, params, jnp.asarray(feats), jnp.asarray(runner.users[anchors]),
        jnp.asarray(runner.table.action_emb[anchors]), jnp.asarray(runner.table.mask[anchors]),
        jnp.full(len(anchors), t, jnp.int32))
    if record is not None:
      record.append(np.asarray(logits))
    if greedy:
      return np.asarray(jnp.argmax(logits, -1))
    keys[0], key = jax.random.split(keys[0])
    return np.asarray(jax.random.categorical(key, logits))
  return choose


def logits_of(scorer: nets.ActionScorer, params, runner: EpisodeRunner, states: np.ndarray,
              anchors: np.ndarray) -> np.ndarray:
  """Logits [B, H, K] of a scorer at every recorded state x_0..x_{H-1} of a batch."""
  B, H = states.shape[0], states.shape[1] - 1
  flat = lambda x: jnp.asarray(np.repeat(x, H, axis=0))  # noqa: E731
  logits = nets.batched_logits(
      scorer, params, jnp.asarray(states[:, :H].reshape(B * H, -1)), flat(runner.users[anchors]),
      flat(runner.table.action_emb[anchors]), flat(runner.table.mask[anchors]),
      jnp.tile(jnp.arange(H, dtype=jnp.int32), B))
  return np.asarray(logits).reshape(B, H, -1)


def random_policy(runner: EpisodeRunner, seed: int) -> Choose:
  rng = np.random.default_rng(seed)

  def choose(t, feats, anchors, texts):
    return np.array([rng.choice(np.flatnonzero(runner.table.mask[a])) for a in anchors])
  return choose


def greedy_one_step_policy(runner: EpisodeRunner, seed: int) -> Choose:
  """Looks one step ahead in the real environment: applies every candidate to x_t and takes
  the best predicted utility (K rewrites per decision: a strong but costly baseline)."""

  def choose(t, feats, anchors, texts):
    K = runner.table.mask.shape[1]
    pairs = [(j, i) for j, a in enumerate(anchors) for i in range(K) if runner.table.mask[a, i]]
    rows = np.array([j for j, _ in pairs])
    _, emb, _ = runner.step([texts[j] for j in rows], anchors[rows],
                            np.array([i for _, i in pairs]), seed=seed * 7919 + t)
    _, z = runner.state_features(emb)
    total, _, _ = runner.score(z, anchors[rows])
    best = np.full(len(anchors), -np.inf)
    chosen = np.zeros(len(anchors), np.int32)
    for (j, i), u in zip(pairs, total):
      if u > best[j]:
        best[j], chosen[j] = u, i
    return chosen
  return choose
