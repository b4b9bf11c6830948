"""Episodes in the EAGLE MDP: the host-side loop around the environment LLM, E_D and U.

State x_t is a description; the policy picks one of the anchor's candidate actions; the
environment LLM rewrites all B descriptions of a batch in one batched, sharded call; E_D
embeds them; the utility scores the final description x_H (terminal reward) or each step's
change (delta reward). Policies are `choose(Observation) -> actions` callables, so the
trained policy, the reference, random and greedy baselines share one loop.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from eagle_jax import actions as actions_lib
from eagle_jax.actions import anchors
from eagle_jax.agent import nets
from eagle_jax.environment import features, build as runtime
from eagle_jax.world import profiles as profiles_lib
from eagle_jax.errors import EagleError


@dataclasses.dataclass(frozen=True)
class Observation:
  """What a policy sees at step t of a batch of B episodes."""
  step: int
  states: np.ndarray        # [B, d_s] state features
  candidates: np.ndarray    # [B, K, d_c] candidate features (`features.candidate_features`)
  masks: np.ndarray         # [B, K] valid candidates
  actions: list[list[str]]  # [B][<=K] the candidates' texts
  action_emb: np.ndarray    # [B, K, d_a] the candidates' text embeddings
  anchors: np.ndarray       # [B] rows of the AnchorTable
  users: np.ndarray         # [B, d_u] the users' features
  texts: list[str]          # [B] current descriptions
  emb: np.ndarray           # [B, d_e] the current descriptions' text embeddings


Choose = Callable[[Observation], np.ndarray]


@dataclasses.dataclass
class Episodes:
  """B episodes of horizon H (arrays are numpy, batch first)."""
  anchors: np.ndarray       # [B] rows of the AnchorTable
  users: np.ndarray         # [B, d_u] the users' features
  states: np.ndarray        # [B, H+1, d_s] state features of x_0..x_H
  candidates: np.ndarray    # [B, H, K, d_c] candidate features at x_0..x_{H-1}
  masks: np.ndarray         # [B, H, K] valid candidates at x_0..x_{H-1}
  actions: list[list[str]]  # [B][H] the action text taken at each step
  chosen: np.ndarray        # [B, H] action index taken at each step
  z: np.ndarray             # [B, H+1, d] E_D latent of x_0..x_H
  utility: np.ndarray       # [B, H+1] U of x_0..x_H (total)
  rating: np.ndarray        # [B, H+1] the <z_u, z> term
  distance: np.ndarray      # [B, H+1] the lambda * kNN-distance term
  texts: list[list[str]]    # [B][H+1] descriptions
  degenerate: int           # rewrites flagged degenerate (kept the previous text)
  rejected: list[list[str | None]]  # [B][H] why step t's rewrite was rejected, or None
  llm_s: float              # wall time inside environment steps (LLM rewrite + its embedding)
  llm_tokens: int = 0
  llm_remembered: int = 0    # rewrites a greedy environment answered from memory

  def rewards(self, mode: str) -> np.ndarray:
    """[B, H] rewards by `mode`:

    "terminal": U(x_H) at t = H-1 and 0 before (the paper's; uncentred: its mean over
      anchors dwarfs what any action changes);
    "gain": U(x_H) - U(x_0) at t = H-1, the same return less what the anchor already had;
    "delta": per-step differences U(x_t+1) - U(x_t) (sums to "gain"; credits each edit).
    """
    if mode == "delta":
      return np.diff(self.utility, axis=1).astype(np.float32)
    r = np.zeros(self.chosen.shape, np.float32)
    if mode == "terminal":
      r[:, -1] = self.utility[:, -1]
    elif mode == "gain":
      r[:, -1] = self.utility[:, -1] - self.utility[:, 0]
    else:
      raise EagleError(f"config.rl.reward={mode!r}: expected 'terminal', 'gain' or 'delta'")
    return r


class Regenerator:
  """Fresh candidates for a later state x_t (t >= 1), made the way the anchors' were:
  library draws with a new seed, or the LLM prompted with the current description
  (config.actions.source). Sets are cut or padded to the table's K; a state for which the
  LLM gave no usable action keeps its anchor's set."""

  def __init__(self, world, config, generate_fn=None):
    self.world = world
    self.config = config
    self.generate_fn = generate_fn
    self._profiles: dict[int, profiles_lib.UserProfile] = {}

  def __call__(self, items: np.ndarray, user_ids: np.ndarray, texts: list[str],
               fallback: list[list[str]], seed: int,
               width: int) -> tuple[list[list[str]], np.ndarray, np.ndarray]:
    """(action texts [B][<=K], embeddings [B, K, d_a], mask [B, K]) for B current states."""
    c, cat = self.config.actions, self.world.catalogue
    sets = []
    for item, user, text, anchor_set in zip(items, user_ids, texts, fallback):
      user = int(user)
      if user not in self._profiles:
        self._profiles[user] = profiles_lib.user_profile(cat, user,
                                                         **self.config.profiles.to_dict())
      cs = actions_lib.candidate_actions(
          cat, int(self.world.items[item]), text, self._profiles[user],
          num_generic=c.num_generic, num_personalised=c.num_personalised, source=c.source,
          generate_fn=self.generate_fn, seed=seed)
      sets.append(cs.actions[:width] or anchor_set)
    action_emb, mask = anchors.embed_actions(self.world, sets, width)
    return sets, action_emb, mask


class EpisodeRunner:
  """Runs batches of episodes from anchors of a AnchorTable in the real environment."""

  def __init__(self, world, table, env, *, horizon: int, personalise: bool,
               regenerate: Regenerator | None = None):
    """regenerate: None reuses each anchor's candidates at every step; a Regenerator makes
    fresh ones for every later state x_t, t >= 1."""
    self.world = world
    self.table = table
    self.env = env
    self.horizon = horizon
    self.personalise = personalise
    self.regenerate = regenerate
    self._utility = world.utility_fn()
    self.users = features.user_features(world, table)
    # Throughput over every `step` so far: generated tokens and seconds (rewrite + E_D).
    self.env_tokens, self.env_seconds = 0, 0.0

  def state_features(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return features.state_features(self.world, emb)

  def candidates(self, t: int, anchors: np.ndarray, texts: list[str], seed: int):
    """(texts [B][<=K], embeddings [B, K, d_a], mask [B, K]) of the candidates at step t."""
    table = self.table
    reuse = [table.actions[a] for a in anchors]
    if self.regenerate is None or t == 0:
      return reuse, table.action_emb[anchors], table.mask[anchors]
    return self.regenerate(table.items[anchors], table.user_ids[anchors], texts, reuse,
                           seed=seed, width=table.mask.shape[1])

  def observe(self, t: int, anchors: np.ndarray, texts: list[str], emb: np.ndarray,
              feats: np.ndarray, z: np.ndarray, seed: int) -> Observation:
    """What the policy sees at step t: the state and its candidates' features."""
    actions, action_emb, mask = self.candidates(t, anchors, texts, seed)
    cands = features.candidate_features(
        self.world, self._utility, emb, z, self.users[anchors], self.table.items[anchors],
        action_emb, mask)
    return Observation(step=t, states=feats, candidates=cands, masks=mask, actions=actions,
                       action_emb=action_emb, anchors=anchors, users=self.users[anchors],
                       texts=texts, emb=emb)

  def score(self, z: np.ndarray, anchors: np.ndarray):
    total, rating, distance = self._utility(jnp.asarray(z), jnp.asarray(self.users[anchors]),
                                            jnp.asarray(self.table.items[anchors]))
    return np.asarray(total), np.asarray(rating), np.asarray(distance)

  def step(self, texts: list[str], actions: list[str], anchors: np.ndarray, seed: int,
           emb: np.ndarray, action_emb: np.ndarray):
    """One environment transition for a batch: each text (embedding `emb` [B, d_e]) edited
    by its action (embedding `action_emb` [B, d_a]); returns (result, new embeddings, env
    seconds)."""
    context = [self.table.profiles[a] for a in anchors] if self.personalise else None
    start = time.perf_counter()
    result, new_emb = self.env.transition(texts, actions, context, seed=seed, emb=emb,
                                          action_emb=action_emb, embed=self.world.embed_text)
    seconds = time.perf_counter() - start
    self.env_tokens += result.tokens
    self.env_seconds += seconds
    return result, new_emb, seconds

  def run(self, anchors: np.ndarray, choose: Choose, seed: int) -> Episodes:
    anchors = np.asarray(anchors)
    B, H = len(anchors), self.horizon
    texts = [[self.world.text(self.table.items[a])] for a in anchors]
    emb = self.world.text_emb[self.table.items[anchors]]
    feats, z = self.state_features(emb)
    all_feats, all_z, chosen = [feats], [z], np.zeros((B, H), np.int32)
    observations, taken = [], [[] for _ in anchors]
    rejected = [[] for _ in anchors]
    degenerate, llm_s, tokens, remembered = 0, 0.0, 0, 0
    for t in range(H):
      # Common random numbers: the same (seed, step) for every policy compared.
      step_seed = seed * 1000 + t
      obs = self.observe(t, anchors, [x[-1] for x in texts], emb, feats, z, step_seed)
      observations.append(obs)
      chosen[:, t] = choose(obs)
      actions = [a[i] for a, i in zip(obs.actions, chosen[:, t])]
      for x, a in zip(taken, actions):
        x.append(a)
      rows = np.arange(B)
      result, emb, dt = self.step(obs.texts, actions, anchors, step_seed, emb,
                                  obs.action_emb[rows, chosen[:, t]])
      llm_s += dt
      tokens += result.tokens
      remembered += result.remembered
      degenerate += sum(r is not None for r in result.degenerate)
      for x, reason in zip(rejected, result.degenerate):
        x.append(reason)
      for x, new in zip(texts, result.texts):
        x.append(new)
      feats, z = self.state_features(emb)
      all_feats.append(feats)
      all_z.append(z)
    z = np.stack(all_z, 1)
    total, rating, distance = self.score(z.reshape(B * (H + 1), -1),
                                         np.repeat(anchors, H + 1))
    shape = (B, H + 1)
    return Episodes(anchors=anchors, users=self.users[anchors], states=np.stack(all_feats, 1),
                    candidates=np.stack([o.candidates for o in observations], 1),
                    masks=np.stack([o.masks for o in observations], 1),
                    actions=taken, chosen=chosen, z=z,
                    utility=total.reshape(shape), rating=rating.reshape(shape),
                    distance=distance.reshape(shape), texts=texts, degenerate=degenerate,
                    rejected=rejected, llm_s=llm_s, llm_tokens=tokens,
                    llm_remembered=remembered)

  def one_step_all(self, anchors: np.ndarray, seed: int):
    """Every candidate of each anchor applied once to x_0: the design's next states.

    Returns (z_next [A, K, d], utility [A, K], texts [A][K]); padded candidates get zeros.
    """
    anchors = np.asarray(anchors)
    K = self.table.mask.shape[1]
    pairs = [(a, i) for a in anchors for i in range(K) if self.table.mask[a, i]]
    texts = [self.world.text(self.table.items[a]) for a, _ in pairs]
    pa, pi = np.array([a for a, _ in pairs]), np.array([i for _, i in pairs])
    result, emb, _ = self.step(texts, [self.table.actions[a][i] for a, i in pairs], pa, seed,
                               self.world.text_emb[self.table.items[pa]],
                               self.table.action_emb[pa, pi])
    _, z = self.state_features(emb)
    total, _, _ = self.score(z, pa)
    z_next = np.zeros((len(anchors), K, z.shape[1]), np.float32)
    utility = np.zeros((len(anchors), K), np.float32)
    out_texts = [[""] * K for _ in anchors]
    row = {a: j for j, a in enumerate(anchors)}
    for (a, i), zi, ui, ti in zip(pairs, z, total, result.texts):
      z_next[row[a], i], utility[row[a], i], out_texts[row[a]][i] = zi, ui, ti
    return z_next, utility, out_texts


def make_runner(config, world, table, environment=None):
  """An episode runner in the config's environment; later states reuse their anchor's
  candidates or get fresh ones (config.rl.candidates)."""
  environment = environment or runtime.build_environment(config, world, table)
  mode = config.rl.candidates
  if mode not in ("reuse", "regenerate"):
    raise EagleError(f"config.rl.candidates={mode!r}: expected 'reuse' or 'regenerate'")
  regenerate = None
  if mode == "regenerate":
    regenerate = Regenerator(world, config, runtime.action_generator(environment, config))
  return EpisodeRunner(world, table, environment, horizon=config.rl.horizon,
                       personalise=config.env.personalise, regenerate=regenerate)


# Policies -------------------------------------------------------------------------------


def scorer_policy(scorer: nets.ActionScorer, params, *, greedy: bool,
                  rng: jax.Array | None = None, first_episode: int = 0) -> Choose:
  """pi(a | x_t, u) from an ActionScorer: sampled (training) or argmax (evaluation).

  Draws are keyed by (rng, step, episode index), the batch's rows being episodes
  first_episode.. of the global batch: a host that rolls out its share draws what one host
  rolling out the whole batch would.
  """

  def choose(obs: Observation):
    logits = nets.batched_logits(
        scorer, params, jnp.asarray(obs.states), jnp.asarray(obs.users),
        jnp.asarray(obs.candidates), jnp.asarray(obs.masks),
        jnp.full(len(obs.anchors), obs.step, jnp.int32))
    if greedy:
      return np.asarray(jnp.argmax(logits, -1))
    episodes = first_episode + jnp.arange(len(obs.anchors))
    keys = jax.vmap(jax.random.fold_in, (None, 0))(jax.random.fold_in(rng, obs.step), episodes)
    return np.asarray(jax.vmap(jax.random.categorical)(keys, logits))
  return choose


def logits_of(scorer: nets.ActionScorer, params, episodes: Episodes) -> np.ndarray:
  """Logits [B, H, K] of a scorer at every recorded state x_0..x_{H-1} of a batch."""
  B, H = episodes.chosen.shape
  flat = lambda x: jnp.asarray(np.repeat(x, H, axis=0))  # noqa: E731
  logits = nets.batched_logits(
      scorer, params, jnp.asarray(episodes.states[:, :H].reshape(B * H, -1)),
      flat(episodes.users),
      jnp.asarray(episodes.candidates.reshape(B * H, *episodes.candidates.shape[2:])),
      jnp.asarray(episodes.masks.reshape(B * H, -1)), jnp.tile(jnp.arange(H, dtype=jnp.int32), B))
  return np.asarray(logits).reshape(B, H, -1)


def random_policy(seed: int) -> Choose:
  rng = np.random.default_rng(seed)

  def choose(obs: Observation):
    return np.array([rng.choice(np.flatnonzero(m)) for m in obs.masks])
  return choose


def predicted_gain_policy() -> Choose:
  """argmax of the standardised predicted gain (the last candidate feature): the best a
  policy can do with E_D's reading of the edit alone, at no environment cost."""

  def choose(obs: Observation):
    return np.argmax(np.where(obs.masks, obs.candidates[..., -1], -np.inf), -1)
  return choose


def greedy_one_step_policy(runner: EpisodeRunner, seed: int) -> Choose:
  """Looks one step ahead in the real environment: applies every candidate to x_t and takes
  the best predicted utility (K rewrites per decision: a strong but costly baseline)."""

  def choose(obs: Observation):
    pairs = [(j, i) for j, m in enumerate(obs.masks) for i in np.flatnonzero(m)]
    rows, cols = np.array([j for j, _ in pairs]), np.array([i for _, i in pairs])
    _, emb, _ = runner.step([obs.texts[j] for j in rows], [obs.actions[j][i] for j, i in pairs],
                            obs.anchors[rows], seed * 7919 + obs.step, obs.emb[rows],
                            obs.action_emb[rows, cols])
    _, z = runner.state_features(emb)
    total, _, _ = runner.score(z, obs.anchors[rows])
    best = np.full(len(obs.anchors), -np.inf)
    chosen = np.zeros(len(obs.anchors), np.int32)
    for (j, i), u in zip(pairs, total):
      if u > best[j]:
        best[j], chosen[j] = u, i
    return chosen
  return choose
