"""The action cache: one file per (movie, user), so a long run resumes where it stopped."""

from __future__ import annotations

import json
import pathlib
import shutil
from typing import Any, Iterable, Iterator, Mapping, Sequence

import tqdm

from eagle_jax.run import artifacts
from eagle_jax.actions.candidate_set import CandidateSet, candidate_actions
from eagle_jax.actions.library import ActionLibrary
from eagle_jax.world.profiles import UserProfile
from eagle_jax.errors import EagleError

Key = tuple[int, int]  # (movie_id, user_id)


class ActionCache:
  """Candidate sets stored as `<movie_id>_<user_id>.json` files, each written atomically.

  `meta` records how the sets were made (counts, source, seed); reopening the folder with
  different `meta` is an error rather than a silent mix of two kinds of action set. Opened
  without `meta`, `self.meta` is what the folder recorded (None: nothing yet).
  """

  def __init__(self, directory: str | pathlib.Path, meta: Mapping[str, Any] | None = None):
    self.directory = pathlib.Path(directory)
    meta_path = self.directory / "meta.json"
    self.meta = artifacts.read_json(meta_path) if meta_path.exists() else None
    if meta is None:
      return
    wanted = json.loads(json.dumps(dict(meta)))
    if self.meta is None:
      artifacts.write_json(meta_path, wanted)
    elif self.meta != wanted:
      raise EagleError(f"action cache {self.directory} was built with {self.meta}, not "
                       f"{dict(meta)}: delete it or choose another folder")
    self.meta = wanted

  @classmethod
  def fresh(cls, directory: str | pathlib.Path, meta: Mapping[str, Any]) -> ActionCache:
    """The cache for `meta`, after discarding sets made with other settings."""
    stored = cls(directory)
    if stored.meta not in (None, json.loads(json.dumps(dict(meta)))):
      shutil.rmtree(stored.directory)
    return cls(directory, meta)

  def path(self, key: Key) -> pathlib.Path:
    movie_id, user_id = key
    return self.directory / f"{int(movie_id)}_{int(user_id)}.json"

  def has(self, key: Key) -> bool:
    return self.path(key).exists()

  def get(self, key: Key) -> CandidateSet | None:
    path = self.path(key)
    if not path.exists():
      return None
    try:
      return CandidateSet.from_dict(artifacts.read_json(path))
    except (json.JSONDecodeError, KeyError, TypeError) as e:
      raise EagleError(f"action cache file {path} is not a candidate set: {e}") from e

  def put(self, key: Key, candidates: CandidateSet) -> None:
    artifacts.write_json(self.path(key), candidates.to_dict())

  def iter_missing(self, keys: Iterable[Key]) -> Iterator[Key]:
    return (k for k in keys if not self.has(k))


def fill_action_cache(cache: ActionCache, catalogue, keys: Sequence[Key],
                      descriptions: Mapping[int, str], profiles: Mapping[int, UserProfile],
                      **kwargs) -> int:
  """Makes the candidate set of every (movie_id, user_id) not yet cached; returns how many.

  `kwargs` go to `candidate_actions`. Each set is stored as soon as it is made, so an
  interrupted run loses at most one set.
  """
  missing = list(cache.iter_missing(keys))
  if "library" not in kwargs:
    kwargs["library"] = ActionLibrary.from_catalogue(catalogue)
  for movie_id, user_id in tqdm.tqdm(missing, desc="actions", unit="pair"):
    if movie_id not in descriptions:
      raise EagleError(f"no description for movie {movie_id} (needed for its actions)")
    if user_id not in profiles:
      raise EagleError(f"no profile for user {user_id} (needed for its actions)")
    cache.put((movie_id, user_id), candidate_actions(
        catalogue, catalogue.movie_index(movie_id), descriptions[movie_id], profiles[user_id],
        **kwargs))
  return len(missing)
