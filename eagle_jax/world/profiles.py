"""User profiles as text: the context EAGLE personalises for (paper §5.1, App. D).

The paper has Gemini Ultra write each profile from the user's rated movies. Here the profile
is built deterministically from MovieLens (loved and disliked movies, genre preferences, the
user's own tags), and an injected LLM may optionally rewrite it as prose.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import pathlib
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from eagle_jax.run import artifacts
from eagle_jax.world.descriptions import frequent_tags
from eagle_jax.errors import EagleError
from eagle_jax.llm.cleaning import strip_markup
from eagle_jax.llm.prompting import GenerateFn

# A MovieLens "genre" that is a screen format, so neither a taste nor an edit target (the
# catalogue already drops the no-genre markers).
NON_CONTENT_GENRES = frozenset({"IMAX"})


@dataclasses.dataclass(frozen=True)
class UserProfile:
  """What a user likes and dislikes, as text and as the parts that action templates use."""
  user_id: int
  text: str
  liked_genres: tuple[str, ...]
  disliked_genres: tuple[str, ...]
  top_tags: tuple[str, ...]
  liked_titles: tuple[str, ...] = ()
  disliked_titles: tuple[str, ...] = ()
  summary: str = ""  # Optional LLM prose; empty when none was made or usable.

  @property
  def prompt_text(self) -> str:
    """The profile as an LLM prompt shows it: the prose summary when there is one."""
    return self.summary or self.text

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> UserProfile:
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in fields})


def content_genres(genres: Iterable[str]) -> tuple[str, ...]:
  return tuple(g for g in genres if g not in NON_CONTENT_GENRES)


def user_profile(catalogue, user_id: int, *, num_liked: int = 5, num_disliked: int = 3,
                 num_genres: int = 3, num_disliked_genres: int = 2, num_tags: int = 5,
                 like_threshold: float = 4.0, dislike_threshold: float = 2.5) -> UserProfile:
  """Builds a user's profile from their ratings and tags in `catalogue`.

  Loved movies are the highest rated (>= like_threshold), ties broken by the most recent
  rating, then by movie id; disliked movies are the lowest rated (<= dislike_threshold).
  A genre's weight is the sum of the user's mean-centred ratings of movies in it, so a
  genre counts as liked when the user rates it above their own average, not merely often.
  """
  ratings = catalogue.ratings
  sel = np.flatnonzero(ratings.user_ids == user_id)
  if sel.size == 0:
    raise EagleError(f"user {user_id} has no ratings in catalogue {catalogue.name!r}")
  rows = catalogue.movie_rows(ratings.movie_ids[sel])
  values = ratings.values[sel].astype(np.float64)
  times = ratings.timestamps[sel]
  movie_ids = ratings.movie_ids[sel]

  def ranked(mask: np.ndarray, sign: float, count: int) -> tuple[str, ...]:
    # lexsort sorts by the last key first: rating, then most recent, then movie id.
    order = np.lexsort((movie_ids, -times, -sign * values))
    return tuple(catalogue.display_title(int(rows[i])) for i in order if mask[i])[:count]

  liked_titles = ranked(values >= like_threshold, 1.0, num_liked)
  disliked_titles = ranked(values <= dislike_threshold, -1.0, num_disliked)

  weights: dict[str, float] = collections.defaultdict(float)
  for row, centred in zip(rows, values - values.mean()):
    for genre in content_genres(catalogue.genres[int(row)]):
      weights[genre] += float(centred)
  # Sums of centred ratings are exact zero only by coincidence; the tolerance drops noise.
  liked_genres = tuple(g for g, w in sorted(weights.items(), key=lambda gw: (-gw[1], gw[0]))
                       if w > 1e-9)[:num_genres]
  disliked_genres = tuple(g for g, w in sorted(weights.items(), key=lambda gw: (gw[1], gw[0]))
                          if w < -1e-9)[:num_disliked_genres]
  top_tags = _user_tags(catalogue.tags, user_id, num_tags)

  parts = []
  if liked_titles:
    parts.append(f"Loves: {', '.join(liked_titles)}.")
  if liked_genres:
    parts.append(f"Favourite genres: {', '.join(liked_genres)}.")
  if disliked_titles:
    parts.append(f"Dislikes: {', '.join(disliked_titles)}.")
  if disliked_genres:
    parts.append(f"Least favourite genres: {', '.join(disliked_genres)}.")
  if top_tags:
    parts.append(f"Often tags: {', '.join(top_tags)}.")
  text = " ".join(parts) or f"Rated {sel.size} movies without a clear preference."
  return UserProfile(user_id=int(user_id), text=text, liked_genres=liked_genres,
                     disliked_genres=disliked_genres, top_tags=top_tags,
                     liked_titles=liked_titles, disliked_titles=disliked_titles)


def _user_tags(tags, user_id: int, count: int) -> tuple[str, ...]:
  if tags is None or count <= 0:
    return ()
  return frequent_tags((tags.tags[i] for i in np.flatnonzero(tags.user_ids == user_id)), count)


_SUMMARY_PROMPT = (
    "Here is what a movie viewer rated:\n{text}\n\n"
    "Describe this viewer's taste in two or three sentences: what they enjoy, what they "
    "avoid, and why. Write only the description.")


def summarise_profiles(profiles: Sequence[UserProfile],
                       generate_fn: GenerateFn) -> list[UserProfile]:
  """Adds an LLM prose summary to each profile, in one batched `generate_fn` call."""
  if not profiles:
    return []
  outputs = generate_fn([_SUMMARY_PROMPT.format(text=p.text) for p in profiles])
  if len(outputs) != len(profiles):
    raise EagleError(f"generate_fn returned {len(outputs)} texts for {len(profiles)} prompts")
  return [dataclasses.replace(p, summary=_clean_summary(o)) for p, o in zip(profiles, outputs)]


def summarise_profile(profile: UserProfile, generate_fn: GenerateFn) -> UserProfile:
  return summarise_profiles([profile], generate_fn)[0]


def _clean_summary(text: str) -> str:
  """The summary as one line of prose, without the markup and preface lines LLMs add."""
  return " ".join(line.strip() for line in strip_markup(text).splitlines() if line.strip())


class ProfileCache:
  """User profiles in one JSON file keyed by user id, rewritten atomically on every `put`.

  `meta` records how the profiles were made (thresholds, LLM); reopening the file with
  different `meta` is an error rather than a silent mix of two kinds of profile.
  """

  def __init__(self, path: str | pathlib.Path, meta: Mapping[str, Any] | None = None):
    self.path = pathlib.Path(path)
    self.meta = dict(meta or {})
    self._profiles: dict[str, dict[str, Any]] = {}
    if self.path.exists():
      try:
        stored = artifacts.read_json(self.path)
        stored_meta, self._profiles = stored["meta"], stored["profiles"]
      except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise EagleError(f"profile cache {self.path} is not a profile cache "
                         f"(expected JSON with 'meta' and 'profiles'): {e}") from e
      if meta is not None and stored_meta != self.meta:
        raise EagleError(f"profile cache {self.path} was built with {stored_meta}, not "
                         f"{self.meta}: delete it or choose another path")
      self.meta = stored_meta

  @classmethod
  def fresh(cls, path: str | pathlib.Path, meta: Mapping[str, Any]) -> ProfileCache:
    """The cache for `meta`, after discarding a file made with other settings."""
    if len(stored := cls(path)) and stored.meta != dict(meta):
      stored.path.unlink()
    return cls(path, meta)

  def __len__(self) -> int:
    return len(self._profiles)

  def has(self, user_id: int) -> bool:
    return str(int(user_id)) in self._profiles

  def get(self, user_id: int) -> UserProfile | None:
    d = self._profiles.get(str(int(user_id)))
    return None if d is None else UserProfile.from_dict(d)

  def put(self, profile: UserProfile) -> None:
    self._profiles[str(profile.user_id)] = profile.to_dict()
    artifacts.write_json(self.path, {"meta": self.meta, "profiles": self._profiles})

  def iter_missing(self, user_ids: Iterable[int]) -> Iterator[int]:
    return (u for u in user_ids if not self.has(u))
