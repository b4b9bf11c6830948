"""Anchors (movie, user) and their candidate actions, embedded for the policy.

An anchor is the initial state of an episode: a real movie x0 and the user u it is edited
for. Anchors are split by movie, so held-out evaluation uses movies the reference network
and the policy never trained on. Each anchor carries its candidate edit actions (generic +
personalised, `eagle_jax.actions`) and their MiniLM embeddings, padded to a fixed K.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np

from eagle_jax import actions as actions_lib
from eagle_jax.run import artifacts, folder as run_folder
from eagle_jax.world import profiles as profiles_lib
from eagle_jax.errors import EagleError

MIN_USER_RATINGS = 20  # Users with fewer ratings have unreliable profiles and factors.


@dataclasses.dataclass(frozen=True)
class AnchorTable:
  """A anchors with K (padded) candidates each."""
  items: np.ndarray          # [A] rows of World.items (the anchor movies)
  user_ids: np.ndarray       # [A] MovieLens user ids
  heldout: np.ndarray        # [A] bool: evaluation anchors (unseen movies)
  actions: list[list[str]]   # [A][K_a] action texts
  action_emb: np.ndarray     # [A, K, d_a] MiniLM embeddings, zero padding
  mask: np.ndarray           # [A, K] bool
  profiles: list[str]        # [A] the user's profile text (context for personalised prompts)

  @property
  def num_anchors(self) -> int:
    return len(self.items)

  def split(self, heldout: bool) -> np.ndarray:
    return np.flatnonzero(self.heldout == heldout)

  def design_rows(self, num: int) -> np.ndarray:
    """The anchors that get one-step rollouts, a design and reference targets: all when
    num <= 0, else the first num in the table's train / held-out proportion. The rollouts
    cost K rewrites per anchor, so the design can cover fewer anchors than RL trains on:
    the reference network generalises to the rest, as the paper's does."""
    if num <= 0 or num >= self.num_anchors:
      return np.arange(self.num_anchors)
    num_heldout = int(round(num * self.heldout.mean()))
    return np.sort(np.concatenate([self.split(False)[:num - num_heldout],
                                   self.split(True)[:num_heldout]]))

  def save(self, path) -> None:
    artifacts.write_npz(path, items=self.items, user_ids=self.user_ids, heldout=self.heldout,
                        action_emb=self.action_emb, mask=self.mask,
                        actions=_ragged_to_array(self.actions),
                        profiles=np.array(self.profiles, dtype=np.str_))

  @classmethod
  def load(cls, path) -> AnchorTable:
    path = pathlib.Path(path)
    if not path.is_file():
      raise EagleError(f"{path} not found: run `python -m eagle_jax actions` first")
    z = artifacts.read_npz(path)
    return cls(items=z["items"], user_ids=z["user_ids"], heldout=z["heldout"],
               actions=[[a for a in row if a] for row in z["actions"].tolist()],
               action_emb=z["action_emb"], mask=z["mask"], profiles=z["profiles"].tolist())


def _ragged_to_array(rows: list[list[str]]) -> np.ndarray:
  width = max(len(r) for r in rows)
  return np.array([r + [""] * (width - len(r)) for r in rows], dtype=np.str_)


def choose_anchors(world, num_anchors: int, heldout_fraction: float,
                   seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Distinct anchor movies, each paired with a user who has not rated it.

  Returns (items [A], user_ids [A], heldout [A]); the last round(A * fraction) are held out.
  """
  cat = world.catalogue
  rng = np.random.default_rng(seed)
  counts = np.bincount(np.searchsorted(world.user_ids, cat.ratings.user_ids),
                       minlength=len(world.user_ids))
  users = world.user_ids[counts >= MIN_USER_RATINGS]
  if num_anchors > len(world.items) or not len(users):
    raise EagleError(f"config.actions.num_anchors={num_anchors}: only {len(world.items)} "
                     f"modelled movies and {len(users)} users with >= {MIN_USER_RATINGS} ratings")
  items = rng.choice(len(world.items), size=num_anchors, replace=False)
  rated = set(zip(cat.ratings.user_ids.tolist(), cat.ratings.movie_ids.tolist()))
  user_ids = []
  for item in items:
    movie_id = int(cat.movie_ids[world.items[item]])
    while True:  # A content gap is for a user who has not seen the movie.
      user = int(rng.choice(users))
      if (user, movie_id) not in rated:
        break
    user_ids.append(user)
  heldout = np.zeros(num_anchors, bool)
  heldout[num_anchors - int(round(num_anchors * heldout_fraction)):] = True
  return items, np.array(user_ids, np.int64), heldout


def build_table(world, config, generate_fn=None, progress: bool = True) -> AnchorTable:
  """Anchors, profiles and candidate actions (cached per pair, resumable), then embeddings.
  Caches made with other settings are cleared first: a rebuilt table is made afresh."""
  c = config.actions
  folder = run_folder.RunFolder(config)
  items, user_ids, heldout = choose_anchors(world, c.num_anchors, c.heldout_fraction,
                                            config.seed)
  cat = world.catalogue
  profile_meta = config.profiles.to_dict()
  profile_cache = profiles_lib.ProfileCache.fresh(folder / run_folder.PROFILES, profile_meta)
  for user in profile_cache.iter_missing(sorted(set(user_ids.tolist()))):
    profile_cache.put(profiles_lib.user_profile(cat, user, **profile_meta))
  profiles = {u: profile_cache.get(u) for u in set(user_ids.tolist())}
  movie_ids = [int(cat.movie_ids[world.items[i]]) for i in items]
  keys = list(zip(movie_ids, user_ids.tolist()))
  # The candidate sets also depend on the profiles they personalise and on the LLM.
  meta = dict(num_generic=c.num_generic, num_personalised=c.num_personalised, source=c.source,
              seed=config.seed, profiles=profile_meta,
              llm=None if c.source == "library" else config.llm.model)
  cache = actions_lib.ActionCache.fresh(folder / run_folder.ACTIONS, meta)
  actions_lib.fill_action_cache(
      cache, cat, keys, world.descriptions.texts, profiles, num_generic=c.num_generic,
      num_personalised=c.num_personalised, source=c.source, generate_fn=generate_fn,
      seed=config.seed)
  texts = [cache.get(k).actions for k in keys]
  return embed_table(world, items, user_ids, heldout, texts,
                     [profiles[u].prompt_text for u in user_ids.tolist()])


def embed_actions(world, texts: list[list[str]],
                  width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """MiniLM embeddings [A, K, d_a] of each row's action texts and the mask [A, K], padded
  to `width` (default: the longest row)."""
  width = width or max(len(t) for t in texts)
  emb = world.embed_text([a for t in texts for a in t])
  action_emb = np.zeros((len(texts), width, emb.shape[1]), np.float32)
  mask = np.zeros((len(texts), width), bool)
  start = 0
  for i, t in enumerate(texts):
    action_emb[i, :len(t)] = emb[start:start + len(t)]
    mask[i, :len(t)] = True
    start += len(t)
  return action_emb, mask


def embed_table(world, items, user_ids, heldout, texts: list[list[str]],
                profiles: list[str]) -> AnchorTable:
  """Embeds every anchor's action texts with MiniLM, padded to the longest set."""
  action_emb, mask = embed_actions(world, texts)
  return AnchorTable(items=np.asarray(items), user_ids=np.asarray(user_ids),
                        heldout=np.asarray(heldout), actions=texts, action_emb=action_emb,
                        mask=mask, profiles=profiles)


def single_anchor(world, config, item: int, user_id: int, generate_fn=None) -> AnchorTable:
  """A one-anchor table for any (movie, user), with fresh candidates (no cache)."""
  c = config.actions
  cat = world.catalogue
  profile = profiles_lib.user_profile(cat, user_id, **config.profiles.to_dict())
  row = int(world.items[item])
  cs = actions_lib.candidate_actions(
      cat, row, world.descriptions.texts[int(cat.movie_ids[row])], profile,
      num_generic=c.num_generic, num_personalised=c.num_personalised, source=c.source,
      generate_fn=generate_fn, seed=config.seed)
  return embed_table(world, [item], [user_id], [True], [cs.actions], [profile.prompt_text])
