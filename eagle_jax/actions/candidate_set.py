"""Candidate sets A(x, u): the edit prompts the policy chooses from, per (movie, user).

Actions come from an LLM (`source="llm"`), from the template library (`source="library"`),
or both (`source="mixed"`: the LLM's first, the library tops up). Every set is balanced
across categories, deduplicated, and deterministic given its seed (and the LLM's own).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Mapping, Sequence

from eagle_jax.actions.library import ActionLibrary, action_key
from eagle_jax.actions.llm_source import PROMPT_EXAMPLES, llm_action_prompt, parse_action_list
from eagle_jax.actions.vocabulary import ACTION_KINDS, CATEGORIES
from eagle_jax.world.profiles import UserProfile
from eagle_jax.errors import EagleError
from eagle_jax.llm.prompting import GenerateFn

SOURCES = ("library", "llm", "mixed")


@dataclasses.dataclass(frozen=True)
class CandidateSet:
  """The candidate actions of one (movie, user), in blocks by kind, then category.

  Within a block the LLM's actions come first, then the library's.
  """
  actions: list[str]
  kinds: list[str]
  categories: list[str]
  sources: list[str]
  stats: dict[str, int]

  def __len__(self) -> int:
    return len(self.actions)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> CandidateSet:
    return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls)})


def _empty_stats() -> dict[str, int]:
  return {"rejected": 0, "duplicates": 0, "from_llm": 0, "from_library": 0}


def _assemble(blocks: Mapping[tuple[str, str], list[tuple[str, str]]],
              stats: dict[str, int]) -> CandidateSet:
  cs = CandidateSet([], [], [], [], stats)
  for k in ACTION_KINDS:
    for c in CATEGORIES:
      for action, source in blocks.get((k, c), ()):
        cs.actions.append(action)
        cs.kinds.append(k)
        cs.categories.append(c)
        cs.sources.append(source)
  return cs


def category_quotas(n: int, categories: Sequence[str] = CATEGORIES) -> dict[str, int]:
  """`n` split over categories as evenly as possible (the first ones get the remainder)."""
  if n < 0:
    raise EagleError(f"the number of actions must be >= 0, got {n}")
  base, extra = divmod(n, len(categories))
  return {c: base + (i < extra) for i, c in enumerate(categories)}


def _kind_quotas(num_generic: int, num_personalised: int,
                 profile: UserProfile | None) -> dict[str, dict[str, int]]:
  if num_personalised and profile is None:
    raise EagleError(f"num_personalised={num_personalised} needs a user profile (got none)")
  return {"generic": category_quotas(num_generic),
          "personalised": category_quotas(num_personalised)}


def generate_llm_actions(generate_fn: GenerateFn, description: str,
                         profile: UserProfile | None, *, num_generic: int = 50,
                         num_personalised: int = 50, max_rounds: int = 2,
                         extra: int = 2) -> CandidateSet:
  """Asks the LLM for each (kind, category) quota, in one batched call per round.

  Each prompt asks for `extra` more than is missing (some lines get rejected); later
  rounds ask only for what is still missing, and stop early when a round adds nothing
  (a greedy sampler repeats itself). The set may fall short of the quotas.
  """
  quotas = _kind_quotas(num_generic, num_personalised, profile)
  blocks: dict[tuple[str, str], list[tuple[str, str]]] = collections.defaultdict(list)
  # Small models copy the prompt's example; as a candidate it would recur for every movie.
  seen = {action_key(e) for e in PROMPT_EXAMPLES.values()}
  stats = _empty_stats()
  for _ in range(max_rounds):
    wanted = [(k, c, q - len(blocks[k, c])) for k, kq in quotas.items() for c, q in kq.items()
              if len(blocks[k, c]) < q]
    if not wanted:
      break
    prompts = [llm_action_prompt(description, profile if k == "personalised" else None, c,
                                 missing + extra) for k, c, missing in wanted]
    outputs = generate_fn(prompts)
    if len(outputs) != len(prompts):
      raise EagleError(f"generate_fn returned {len(outputs)} texts for {len(prompts)} prompts")
    added = 0
    for (k, c, missing), output in zip(wanted, outputs):
      actions, rejected = parse_action_list(output)
      stats["rejected"] += rejected
      for action in actions:
        if action_key(action) in seen:
          stats["duplicates"] += 1
        elif len(blocks[k, c]) < quotas[k][c]:
          seen.add(action_key(action))
          blocks[k, c].append((action, "llm"))
          added += 1
    if not added:
      break
  stats["from_llm"] = sum(len(b) for b in blocks.values())
  return _assemble(blocks, stats)


def candidate_actions(catalogue, movie_index: int, description: str,
                      profile: UserProfile | None, *, num_generic: int = 50,
                      num_personalised: int = 50, source: str = "library",
                      generate_fn: GenerateFn | None = None, seed: int = 0,
                      library: ActionLibrary | None = None,
                      max_rounds: int = 2) -> CandidateSet:
  """The candidate actions of one (movie, user), balanced over the five categories.

  "library" and "mixed" always reach the requested counts (or raise); "llm" returns what
  the LLM gave. Generic library actions depend on the movie and seed only, not the user;
  the LLM's randomness is `generate_fn`'s own.
  """
  if source not in SOURCES:
    raise EagleError(f"actions source {source!r} is not one of {SOURCES}")
  if seed < 0:
    raise EagleError(f"the action seed must be >= 0, got {seed}")
  if source != "library" and generate_fn is None:
    raise EagleError(f"actions source {source!r} needs an LLM (generate_fn), got none")
  quotas = _kind_quotas(num_generic, num_personalised, profile)
  if source == "library":
    result = CandidateSet([], [], [], [], _empty_stats())
  else:
    result = generate_llm_actions(generate_fn, description, profile, num_generic=num_generic,
                                  num_personalised=num_personalised, max_rounds=max_rounds)
    if source == "llm":
      return result
  blocks: dict[tuple[str, str], list[tuple[str, str]]] = collections.defaultdict(list)
  for a, k, c, src in zip(result.actions, result.kinds, result.categories, result.sources):
    blocks[k, c].append((a, src))
  seen = {action_key(a) for a in result.actions}
  library = library or ActionLibrary.from_catalogue(catalogue)
  slots = library.slots(catalogue, movie_index, profile)
  movie_id = int(catalogue.movie_ids[movie_index])
  stats = dict(result.stats)
  for kind_index, (kind, kind_quotas) in enumerate(quotas.items()):
    missing = {c: q - len(blocks[kind, c]) for c, q in kind_quotas.items()}
    if not sum(missing.values()):
      continue
    # Generic draws ignore the user, so every user of a movie gets the same generic actions.
    user = 0 if kind == "generic" else profile.user_id + 1
    drawn = library.draw(kind, missing, slots, (seed, movie_id, user, kind_index), seen)
    if len(drawn) < sum(missing.values()):
      who, hint = f"movie {movie_id}", ""
      if kind == "personalised":
        who += f", user {profile.user_id}"
        hint = " (personalised actions need a profile that names genres, movies or tags)"
      raise EagleError(f"the action library can make only {len(drawn)} of "
                       f"{sum(missing.values())} {kind} actions for {who}{hint}")
    for a, c in drawn:
      blocks[kind, c].append((a, "library"))
    stats["from_library"] += len(drawn)
  return _assemble(blocks, stats)
