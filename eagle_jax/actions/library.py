"""The template library: hand-written actions filled from the movie, the profile and `VOCAB`.

`ActionLibrary.draw` spreads each category's draws over its templates before any template
repeats, and is deterministic given its seed.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
import string
from typing import Iterator, Mapping, Sequence

import numpy as np

from eagle_jax.actions.vocabulary import (CATEGORIES, MAX_ACTION_WORDS, MIN_ACTION_WORDS,
                                          TEMPLATES, VOCAB)
from eagle_jax.world.descriptions import frequent_tags
from eagle_jax.world.profiles import UserProfile, content_genres

# Genre names as they read inside a sentence ("a noir film", "a children's film").
_GENRE_WORDS = {"Children": "children's", "Children's": "children's", "Film-Noir": "noir",
                "Sci-Fi": "sci-fi"}


def genre_word(genre: str) -> str:
  return _GENRE_WORDS.get(genre, genre.lower())


def _slot_names(template: str) -> tuple[str, ...]:
  return tuple(name for _, name, _, _ in string.Formatter().parse(template) if name)


def _fix_articles(text: str) -> str:
  """"a action film" -> "an action film" (templates cannot know which word fills a slot)."""
  return re.sub(r"\b([Aa]) (?=[aeiouAEIOU])", r"\1n ", text)


def action_key(text: str) -> str:
  """Case- and punctuation-insensitive identity of an action, for deduplication."""
  return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


@dataclasses.dataclass(frozen=True)
class ActionLibrary:
  """Hand-written action templates per (kind, category) and the vocabularies that fill them."""
  genres: tuple[str, ...]  # The catalogue's content genres: targets for genre moves.
  templates: Mapping[tuple[str, str], tuple[str, ...]] = dataclasses.field(
      default_factory=lambda: dict(TEMPLATES))
  vocab: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=lambda: dict(VOCAB))
  num_tags: int = 5  # The movie's most used tags that tag moves may name.

  @classmethod
  def from_catalogue(cls, catalogue, **kwargs) -> ActionLibrary:
    genres = sorted({g for movie in catalogue.genres for g in content_genres(movie)})
    return cls(genres=tuple(genres), **kwargs)

  def slots(self, catalogue, movie_index: int,
            profile: UserProfile | None) -> dict[str, tuple[str, ...]]:
    """Every slot's possible fillers for this (movie, user); empty when a slot has none."""
    own = content_genres(catalogue.genres[movie_index])
    title = catalogue.display_title(movie_index)
    slots = dict(self.vocab)
    slots["own_genre"] = tuple(genre_word(g) for g in own)
    slots["new_genre"] = tuple(genre_word(g) for g in self.genres if g not in own)
    slots["tag"] = _movie_tags(catalogue, movie_index, self.num_tags)
    if profile is not None:
      slots["liked_genre"] = tuple(genre_word(g) for g in profile.liked_genres)
      slots["disliked_genre"] = tuple(genre_word(g) for g in profile.disliked_genres)
      # "Give it the feel of Heat" says nothing when the movie is Heat.
      slots["liked_movie"] = tuple(t for t in profile.liked_titles if t != title)
      slots["disliked_movie"] = tuple(t for t in profile.disliked_titles if t != title)
      slots["user_tag"] = tuple(t for t in profile.top_tags if _is_phrase(t))
    return slots

  def draw(self, kind: str, quotas: Mapping[str, int], slots: Mapping[str, Sequence[str]],
           seed: Sequence[int], seen: set[str]) -> list[tuple[str, str]]:
    """Draws `quotas[category]` distinct actions per category as (action, category) pairs.

    Each category cycles through its usable templates in a seeded random order, filling
    each with a fresh random slot combination, so templates are spread before any repeats.
    A category whose pool runs dry hands its remainder to the others. `seen` holds the
    `action_key`s already taken (e.g. from the LLM) and is updated.
    """
    streams = {c: _stream(self.templates.get((kind, c), ()), slots,
                          np.random.default_rng([*seed, CATEGORIES.index(c)]), seen)
               for c in quotas}
    drawn: dict[str, list[str]] = {c: [] for c in quotas}
    deficit = 0
    for c, quota in quotas.items():
      drawn[c] = list(itertools.islice(_taking(streams[c], seen), quota))
      deficit += quota - len(drawn[c])
    live = [c for c in quotas if len(drawn[c]) == quotas[c]]
    while deficit and live:
      for c in list(live):
        action = next(_taking(streams[c], seen), None)
        if action is None:
          live.remove(c)
          continue
        drawn[c].append(action)
        deficit -= 1
        if not deficit:
          break
    return [(a, c) for c in quotas for a in drawn[c]]


def _taking(stream: Iterator[str], seen: set[str]) -> Iterator[str]:
  for action in stream:
    seen.add(action_key(action))
    yield action


def _stream(templates: Sequence[str], slots: Mapping[str, Sequence[str]],
            rng: np.random.Generator, seen: set[str]) -> Iterator[str]:
  """Round-robin over the usable templates; each yields unseen, valid fillings in random order."""
  usable = [t for t in templates if all(slots.get(n) for n in _slot_names(t))]
  fillings = [_fillings(usable[i], slots, rng) for i in rng.permutation(len(usable))]
  while fillings:
    for it in list(fillings):
      for action in it:
        words = len(action.split())
        if action_key(action) not in seen and MIN_ACTION_WORDS <= words <= MAX_ACTION_WORDS:
          yield action
          break
      else:
        fillings.remove(it)


def _fillings(template: str, slots: Mapping[str, Sequence[str]],
              rng: np.random.Generator) -> Iterator[str]:
  """All slot combinations of one template in a random order, without listing them all."""
  names = _slot_names(template)
  sizes = [len(slots[n]) for n in names]
  for flat in rng.permutation(math.prod(sizes)):
    idx = np.unravel_index(flat, sizes) if names else ()
    yield _fix_articles(template.format(**{n: slots[n][i] for n, i in zip(names, idx)}))


def _is_phrase(tag: str) -> bool:
  """Tags that read as words in a sentence (not "BD-R", ids or long comments)."""
  return bool(re.fullmatch(r"[a-z][a-z' -]*", tag)) and len(tag.split()) <= 4


def _movie_tags(catalogue, movie_index: int, count: int) -> tuple[str, ...]:
  """The movie's most used user tags that read as words in a sentence."""
  tags = catalogue.tags
  if tags is None or count <= 0:
    return ()
  mine = np.flatnonzero(tags.movie_ids == catalogue.movie_ids[movie_index])
  ranked = frequent_tags((tags.tags[i] for i in mine), len(mine))
  return tuple(t for t in ranked if _is_phrase(t))[:count]
