"""User profiles: hand-computed text for a tiny catalogue, LLM summaries, the resumable cache."""

from __future__ import annotations

import json
import pathlib

import pytest

from eagle_jax.world.profiles import (ProfileCache, UserProfile, summarise_profile,
                                     summarise_profiles, user_profile)
from eagle_jax.errors import EagleError
from tests.fakes import tiny_catalogue, torn_write


# Centred ratings of user 7: Heat +2, Alien +2, Toy Story +1, Notting Hill -1, Saw -2,
# Avatar -2. Genre sums: Crime 2; Adventure, Animation, Children 1; Action, Thriller, Horror,
# Sci-Fi, Comedy 0 (neither liked nor disliked); Romance -1; IMAX is no genre.
EXPECTED_TEXT = (
    "Loves: Alien (1979), Heat (1995), Toy Story (1995). "  # 5-star tie: most recent first
    "Favourite genres: Crime, Adventure, Animation. "       # 1-weight tie: alphabetical
    "Dislikes: Saw (2004), Avatar (2009), Notting Hill (1999). "
    "Least favourite genres: Romance. "
    "Often tags: dark, funny, twist ending.")


def test_profile_text_matches_hand_computed():
  p = user_profile(tiny_catalogue(), 7)
  assert p.text == EXPECTED_TEXT
  assert p.user_id == 7
  assert p.liked_genres == ("Crime", "Adventure", "Animation")
  assert p.disliked_genres == ("Romance",)
  assert p.top_tags == ("dark", "funny", "twist ending")
  assert p.liked_titles == ("Alien (1979)", "Heat (1995)", "Toy Story (1995)")
  assert p.disliked_titles == ("Saw (2004)", "Avatar (2009)", "Notting Hill (1999)")
  assert p.prompt_text == EXPECTED_TEXT


def test_profile_limits_and_missing_parts():
  p = user_profile(tiny_catalogue(with_tags=False), 7, num_liked=2, num_disliked=1,
                   num_genres=1)
  assert p.text == ("Loves: Alien (1979), Heat (1995). Favourite genres: Crime. "
                    "Dislikes: Saw (2004). Least favourite genres: Romance.")
  # User 8: Heat 1 star, Saw 5 stars (mean 3): the thresholds and genre signs flip.
  p8 = user_profile(tiny_catalogue(), 8)
  assert p8.text == ("Loves: Saw (2004). Favourite genres: Horror. Dislikes: Heat (1995). "
                     "Least favourite genres: Action, Crime. Often tags: gory, slow.")


def test_profile_of_unknown_user_names_it():
  with pytest.raises(EagleError, match="user 99 has no ratings in catalogue 'tiny'"):
    user_profile(tiny_catalogue(), 99)


def test_summary_uses_injected_llm_and_cleans_its_output():
  prompts = []

  def generate(batch):
    prompts.extend(batch)
    return ["Here is the profile:\n**This viewer** loves crime films.\n\nThey avoid romance.",
            "   "]

  profiles = [user_profile(tiny_catalogue(), 7), user_profile(tiny_catalogue(), 8)]
  p7, p8 = summarise_profiles(profiles, generate)
  assert len(prompts) == 2 and EXPECTED_TEXT in prompts[0]
  assert p7.summary == "This viewer loves crime films. They avoid romance."
  assert p7.prompt_text == p7.summary and p7.text == EXPECTED_TEXT
  assert p8.summary == "" and p8.prompt_text == p8.text  # Nothing usable: keep the text.
  with pytest.raises(EagleError, match="returned 0 texts for 1 prompts"):
    summarise_profile(profiles[0], lambda batch: [])


def test_profile_cache_resumes(tmp_path):
  cat = tiny_catalogue()
  path = tmp_path / "profiles.json"
  cache = ProfileCache(path, meta={"num_liked": 5})
  made = {u: user_profile(cat, u) for u in (7, 8)}
  for u in (7, 8):
    cache.put(made[u])
  cache.put(UserProfile(11, "Loves: Heat (1995).", (), (), (), ("Heat (1995)",)))
  reopened = ProfileCache(path, meta={"num_liked": 5})
  assert len(reopened) == 3
  assert reopened.get(7) == made[7] and reopened.get(8) == made[8]
  assert reopened.get(11).liked_titles == ("Heat (1995)",)
  assert reopened.get(12) is None
  assert list(reopened.iter_missing([7, 12, 8, 11, 13])) == [12, 13]
  assert ProfileCache(path).meta == {"num_liked": 5}  # No meta given: take the stored one.
  with pytest.raises(EagleError, match="was built with {'num_liked': 5}"):
    ProfileCache(path, meta={"num_liked": 3})


def test_profile_cache_write_failure_keeps_previous_file(tmp_path, monkeypatch):
  path = tmp_path / "profiles.json"
  cache = ProfileCache(path)
  cache.put(user_profile(tiny_catalogue(), 7))
  before = path.read_text()

  monkeypatch.setattr(pathlib.Path, "write_text", torn_write)
  with pytest.raises(OSError, match="disk full"):
    cache.put(user_profile(tiny_catalogue(), 8))
  monkeypatch.undo()
  assert path.read_text() == before
  assert sorted(p.name for p in tmp_path.iterdir()) == ["profiles.json"]  # No temp file left.
  assert list(ProfileCache(path).iter_missing([7, 8])) == [8]


def test_corrupt_profile_cache_names_the_file(tmp_path):
  path = tmp_path / "profiles.json"
  path.write_text(json.dumps({"7": {}}))
  with pytest.raises(EagleError, match=f"profile cache {path} is not a profile cache"):
    ProfileCache(path)
