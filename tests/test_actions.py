"""Candidate actions: library counts, balance, determinism, LLM parsing, the resumable cache."""

from __future__ import annotations

import collections
import pathlib
import re

import pytest

from eagle_jax.actions import ActionCache, candidate_actions, fill_action_cache
from eagle_jax.actions import library as library_lib
from eagle_jax.actions.candidate_set import category_quotas, generate_llm_actions
from eagle_jax.actions.library import ActionLibrary, action_key
from eagle_jax.actions.llm_source import llm_action_prompt, parse_action_list
from eagle_jax.actions.vocabulary import (CATEGORIES, CATEGORY_DESCRIPTIONS, MOVIE_SLOTS,
                                          PROFILE_SLOTS, TEMPLATES, VOCAB)
from eagle_jax.world.movielens import load_catalogue
from eagle_jax.world.profiles import UserProfile, user_profile
from eagle_jax.errors import EagleError
from tests.fakes import tiny_catalogue, torn_write

HEAT = 0  # Row of Heat (1995) in the tiny catalogue.


@pytest.fixture(scope="module")
def catalogue():
  return tiny_catalogue()


@pytest.fixture(scope="module")
def profile(catalogue):
  return user_profile(catalogue, 7)


def _profile_terms(p: UserProfile) -> list[str]:
  genres = [library_lib.genre_word(g) for g in p.liked_genres + p.disliked_genres]
  return genres + list(p.liked_titles + p.disliked_titles + p.top_tags)


def test_library_set_has_50_plus_50_distinct_balanced_instructions(catalogue, profile):
  cs = candidate_actions(catalogue, HEAT, "Heat (1995).", profile)
  assert len(cs) == 100
  assert cs.kinds == ["generic"] * 50 + ["personalised"] * 50
  assert len({action_key(a) for a in cs.actions}) == 100
  for kind in ("generic", "personalised"):
    per_category = collections.Counter(c for c, k in zip(cs.categories, cs.kinds) if k == kind)
    assert per_category == {c: 10 for c in CATEGORIES}
  assert cs.stats == {"rejected": 0, "duplicates": 0, "from_llm": 0, "from_library": 100}
  assert set(cs.sources) == {"library"}
  # Library actions are exactly what the LLM parser accepts: short imperative sentences.
  assert parse_action_list("\n".join(cs.actions)) == (cs.actions, 0)
  assert all(len(a.split()) < 25 for a in cs.actions)
  assert not [a for a in cs.actions if re.search(r"\b[Aa] [aeiouAEIOU]", a)]  # "a action"
  # Every personalised action names something from the profile, never the movie itself.
  terms = _profile_terms(profile)
  for a in cs.actions[50:]:
    assert any(t in a for t in terms), a
    assert "Heat (1995)" not in a


def test_library_is_deterministic_and_generic_actions_ignore_the_user(catalogue, profile):
  first = candidate_actions(catalogue, HEAT, "", profile, seed=3)
  assert first == candidate_actions(catalogue, HEAT, "", profile, seed=3)
  other_seed = candidate_actions(catalogue, HEAT, "", profile, seed=4)
  assert set(first.actions) != set(other_seed.actions)
  other_user = candidate_actions(catalogue, HEAT, "", user_profile(catalogue, 8), seed=3)
  assert other_user.actions[:50] == first.actions[:50]
  assert set(other_user.actions[50:]).isdisjoint(first.actions[50:])


@pytest.mark.parametrize("n, expected", [(7, [2, 2, 1, 1, 1]), (5, [1] * 5), (0, [0] * 5),
                                         (12, [3, 3, 2, 2, 2])])
def test_uneven_counts_stay_balanced_within_one(catalogue, profile, n, expected):
  assert list(category_quotas(n).values()) == expected
  cs = candidate_actions(catalogue, HEAT, "", profile, num_generic=n, num_personalised=n)
  for kind in ("generic", "personalised"):
    counts = collections.Counter(c for c, k in zip(cs.categories, cs.kinds) if k == kind)
    assert [counts[c] for c in CATEGORIES] == expected


def test_exhausted_category_hands_its_quota_to_the_others(catalogue):
  # Two distinct plot actions (one template repeats another), one theme template with 20
  # fillings, no other categories: 10 generic actions still come out.
  library = ActionLibrary(genres=("Comedy",), templates={
      ("generic", "plot"): ("Cut the romantic subplot.", "Let the villain win in the end.",
                            "cut the Romantic SUBPLOT!"),
      ("generic", "themes"): ("Explore the theme of {theme}.",)})
  cs = candidate_actions(catalogue, HEAT, "", None, num_generic=10, num_personalised=0,
                         library=library)
  assert collections.Counter(cs.categories) == {"plot": 2, "themes": 8}
  with pytest.raises(EagleError, match="can make only 2 of 5 generic actions for movie 1"):
    candidate_actions(catalogue, HEAT, "", None, num_generic=5, num_personalised=0,
                      library=ActionLibrary(genres=(), templates={
                          ("generic", "plot"): ("Cut the romantic subplot.",
                                                "Let the villain win in the end.")}))


def test_personalised_actions_need_profile_content(catalogue):
  empty = UserProfile(5, "Rated 3 movies without a clear preference.", (), (), ())
  with pytest.raises(EagleError, match="0 of 50 personalised actions for movie 1, user 5"):
    candidate_actions(catalogue, HEAT, "", empty)
  with pytest.raises(EagleError, match="num_personalised=50 needs a user profile"):
    candidate_actions(catalogue, HEAT, "", None)
  with pytest.raises(EagleError, match="source 'gpt' is not one of"):
    candidate_actions(catalogue, HEAT, "", None, num_personalised=0, source="gpt")
  with pytest.raises(EagleError, match="source 'llm' needs an LLM"):
    candidate_actions(catalogue, HEAT, "", None, num_personalised=0, source="llm")


def test_every_template_is_an_instruction_and_personalised_ones_use_the_profile():
  for (kind, _), templates in TEMPLATES.items():
    for t in templates:
      assert parse_action_list(t)[1] == 0, t
      names = set(library_lib._slot_names(t))
      assert names <= set(VOCAB) | set(MOVIE_SLOTS) | set(PROFILE_SLOTS)
      assert (kind == "personalised") == bool(names & set(PROFILE_SLOTS)), t
  per_category = collections.Counter()
  for (_, category), templates in TEMPLATES.items():
    per_category[category] += len(templates)
  assert min(per_category.values()) >= 35  # ~20 generic + ~15 personalised templates each


def test_real_movielens_users_get_full_sets():
  cat = load_catalogue("embedded")
  library = ActionLibrary.from_catalogue(cat)
  assert "IMAX" not in library.genres and "Sci-Fi" in library.genres
  for user, title in ((1, "Toy Story (1995)"), (2, "Heat (1995)"), (610, "Alien (1979)")):
    p = user_profile(cat, user)
    cs = candidate_actions(cat, cat.find_movie(title), "", p, library=library)
    assert len({action_key(a) for a in cs.actions}) == 100
    terms = _profile_terms(p)
    assert all(any(t in a for t in terms) for a in cs.actions[50:])


# ---- LLM source --------------------------------------------------------------------------


MESSY_OUTPUTS = [
    ("""Here are 5 actions:

1. Add a twist in which the mentor is the villain.
2) **Shift the setting** to 1920s Paris.
3. "Give the hero a tragic backstory."
4. Plot twist: Reveal that the narrator was dead all along.
5. Make the ending darker. This would surprise viewers.

Note: these changes would make the movie more exciting!""",
     ["Add a twist in which the mentor is the villain.", "Shift the setting to 1920s Paris.",
      "Give the hero a tragic backstory.", "Reveal that the narrator was dead all along.",
      "Make the ending darker."], 2),
    ("""- Add more jokes
* Cut the second act (this would tighten the pacing)
• Introduce a talking dog as a sidekick - this adds humour for kids
- add more jokes!
- Increase the budget?
- Sure""",
     ["Add more jokes.", "Cut the second act.", "Introduce a talking dog as a sidekick."], 3),
    ("""Sure! Here's a list of ways to change the movie:
**Plot changes:**
1. **Change the setting:** Move the story to a space station.
   - This would add a sci-fi flavour.
2. **New character:** Introduce a rival detective.
I hope these help! Let me know if you need more.""",
     ["Move the story to a space station.", "Introduce a rival detective."], 4),
    ("", [], 0),
    ("\n  \n", [], 0),
    ("""Add a scene where the hero sings.
Make the villain a woman, which would subvert expectations.
Give it the feel of Dr. Strangelove (1964).
It could be set in Rome.
Let me know if you want more.
""" + "Use handheld camera work in every scene so that the audience feels the chaos and "
       "confusion of the war that the characters live through daily.",  # 25 words.
     ["Add a scene where the hero sings.", "Make the villain a woman.",
      "Give it the feel of Dr. Strangelove (1964)."], 3),
    ("1. Add a new villain.\n   - Make him a former soldier.\n2. Cut the romance subplot.",
     ["Add a new villain.", "Cut the romance subplot."], 1),  # An elaboration, not an item.
    # Shortened SmolLM2-135M-Instruct answers to llm_action_prompt: a list run together on
    # one line, quoted items, negative imperatives, stray headers, repeats, no imperatives.
    ("1. Add a twist to the masterful scene. 2. In a world without a mastermind, a "
     "mastermind's best friend. 3. A mastermind's best friend, the mastermind's best friend.",
     ["Add a twist to the masterful scene."], 2),
    ('''"1. Don't give the sidekick a secret past."
"2. Don't make the villain a hero."
"3. Don't make the villain a hero."

Lambda: 1 to 3.

Sentences:
1. Don't give the sidekick a secret past.''',
     ["Don't give the sidekick a secret past.", "Don't make the villain a hero."], 4),
    ("#1. The sidekick has a secret past.\n#2. Watch the movie again to understand "
     "forgiveness.\n#3. Give the sidekick a secret past.",
     ["Give the sidekick a secret past."], 2),
    ("The movie Heat will leave you in a better place. Let's make sure to keep that up.",
     [], 1),
    ("""  1. Add a heist.
  2. Add a heist!
  3. ADD A HEIST
  4. Add.""",
     ["Add a heist."], 3),
]


@pytest.mark.parametrize("text, expected, rejected", MESSY_OUTPUTS)
def test_parse_action_list_on_messy_llm_outputs(text, expected, rejected):
  assert parse_action_list(text) == (expected, rejected)


def test_llm_prompt_asks_for_category_and_count(profile):
  generic = llm_action_prompt("A heist goes wrong.", None, "visuals", 12)
  assert "A heist goes wrong." in generic and "List 12 " in generic
  assert CATEGORY_DESCRIPTIONS["visuals"] in generic and "profile" not in generic
  personal = llm_action_prompt("A heist goes wrong.", profile, "plot", 3)
  assert profile.text in personal and "for this viewer" in personal
  with pytest.raises(EagleError, match="unknown action category 'music'"):
    llm_action_prompt("x", None, "music", 3)


class FakeLLM:
  """Answers each prompt with a numbered list: `per_prompt(kind)` new actions for its
  category, a preface line, and one line every prompt repeats (a cross-list duplicate)."""

  def __init__(self, per_prompt):
    self.per_prompt = per_prompt
    self.calls: list[list[str]] = []

  def __call__(self, prompts):
    self.calls.append(list(prompts))
    outputs = []
    for p in prompts:
      kind = "personalised" if "for this viewer" in p else "generic"
      category = next(c for c, d in CATEGORY_DESCRIPTIONS.items() if d in p)
      lines = ["Here are some ideas:"]
      lines += [f"{i + 1}. Add {category} change {i} for {kind} round {len(self.calls)}."
                for i in range(self.per_prompt(kind))]
      lines.append("- Add more jokes.")
      outputs.append("\n".join(lines))
    return outputs


def test_llm_rounds_ask_only_for_what_is_missing(profile):
  llm = FakeLLM(lambda kind: 12 if kind == "generic" else 2)
  cs = generate_llm_actions(llm, "A heist.", profile, num_generic=50, num_personalised=50,
                            max_rounds=2)
  first, second = llm.calls
  assert len(first) == 10 and all("List 12 " in p for p in first)
  # Generic quotas fill in round 1 (the overflow and "Add more jokes." are dropped there),
  # so "Add more jokes." first lands in the personalised plot block, and round 2 asks for
  # the personalised remainder only (+2 spare): 10 - 3 for plot, 10 - 2 for the others.
  assert len(second) == 5 and all("for this viewer" in p for p in second)
  assert ["List 9 " in p for p in second] == [True, False, False, False, False]
  assert all("List 10 " in p for p in second[1:])
  counts = collections.Counter(zip(cs.kinds, cs.categories))
  assert all(counts["generic", c] == 10 for c in CATEGORIES)
  assert [counts["personalised", c] for c in CATEGORIES] == [5, 4, 4, 4, 4]
  # Rejected: one preface per answer (10 + 5). Duplicates: "Add more jokes." after its
  # first use, 4 times in round 1 and 5 times in round 2.
  assert cs.stats == {"rejected": 15, "duplicates": 9, "from_llm": 71, "from_library": 0}
  assert cs.actions[0] == "Add plot change 0 for generic round 1."


def test_llm_echo_of_the_prompt_example_is_a_duplicate():
  def echo(prompts):  # Every answer repeats the audience prompt's own example.
    return ["1. Make it appeal to teenagers.\n2. Add a catchy theme song."] * len(prompts)

  cs = generate_llm_actions(echo, "A heist.", None, num_generic=5, num_personalised=0,
                            max_rounds=1)
  assert cs.actions == ["Add a catchy theme song."] and cs.categories == ["plot"]
  assert cs.stats == {"rejected": 0, "duplicates": 9, "from_llm": 1, "from_library": 0}


def test_mixed_tops_up_llm_actions_from_the_library(catalogue, profile):
  llm = FakeLLM(lambda kind: 3)
  cs = candidate_actions(catalogue, HEAT, "Heat (1995).", profile, source="mixed",
                         generate_fn=llm, max_rounds=1)
  assert len(cs) == 100 and len({action_key(a) for a in cs.actions}) == 100
  assert cs.stats == {"rejected": 10, "duplicates": 9, "from_llm": 31, "from_library": 69}
  for kind in ("generic", "personalised"):
    for c in CATEGORIES:
      block = [s for s, k, cc in zip(cs.sources, cs.kinds, cs.categories)
               if (k, cc) == (kind, c)]
      assert len(block) == 10 and block == sorted(block, key=lambda s: s != "llm")
  only_llm = candidate_actions(catalogue, HEAT, "Heat (1995).", profile, source="llm",
                               generate_fn=FakeLLM(lambda kind: 3), max_rounds=1)
  assert len(only_llm) == 31 and set(only_llm.sources) == {"llm"}


# ---- Cache -------------------------------------------------------------------------------


def test_action_cache_resumes(tmp_path, catalogue, profile):
  keys = [(1, 7), (2, 7), (3, 7), (4, 8), (5, 8)]
  sets = {k: candidate_actions(catalogue, k[0] - 1, "", profile, num_generic=5,
                               num_personalised=5) for k in keys}
  cache = ActionCache(tmp_path / "actions", meta={"num_generic": 5})
  for k in keys[:3]:
    cache.put(k, sets[k])
  reopened = ActionCache(tmp_path / "actions", meta={"num_generic": 5})
  assert [reopened.has(k) for k in keys] == [True, True, True, False, False]
  assert reopened.get(keys[1]) == sets[keys[1]]
  assert reopened.get(keys[4]) is None
  assert list(reopened.iter_missing(keys)) == keys[3:]
  with pytest.raises(EagleError, match="was built with {'num_generic': 5}"):
    ActionCache(tmp_path / "actions", meta={"num_generic": 50})


def test_action_cache_write_failure_leaves_no_file(tmp_path, monkeypatch, catalogue, profile):
  cache = ActionCache(tmp_path / "actions")
  cs = candidate_actions(catalogue, HEAT, "", profile, num_generic=5, num_personalised=5)

  monkeypatch.setattr(pathlib.Path, "write_text", torn_write)
  with pytest.raises(OSError, match="disk full"):
    cache.put((1, 7), cs)
  monkeypatch.undo()
  assert not cache.has((1, 7)) and list(tmp_path.glob("actions/*")) == []
  (tmp_path / "actions" / "2_7.json").write_text("{not json")
  with pytest.raises(EagleError, match="2_7.json is not a candidate set"):
    cache.get((2, 7))


def test_fill_action_cache_continues_after_an_interruption(tmp_path, catalogue):
  keys = [(1, 7), (2, 7), (3, 8), (4, 8), (6, 7)]
  descriptions = {m: f"movie {m}" for m in range(1, 7)}
  profiles = {u: user_profile(catalogue, u) for u in (7, 8)}
  kwargs = dict(num_generic=5, num_personalised=5, seed=1)
  cache = ActionCache(tmp_path / "run")
  # User 8's profile is missing: the run stops at the third pair, after storing two.
  with pytest.raises(EagleError, match="no profile for user 8"):
    fill_action_cache(cache, catalogue, keys, descriptions, {7: profiles[7]}, **kwargs)
  assert list(cache.iter_missing(keys)) == keys[2:]
  assert fill_action_cache(ActionCache(tmp_path / "run"), catalogue, keys, descriptions,
                           profiles, **kwargs) == 3
  fresh = ActionCache(tmp_path / "fresh")
  assert fill_action_cache(fresh, catalogue, keys, descriptions, profiles, **kwargs) == 5
  assert all(cache.get(k) == fresh.get(k) for k in keys)
