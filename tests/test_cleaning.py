"""The shared LLM output cleaner, on answers each of its callers gets from small models."""

from __future__ import annotations

import pytest

from eagle_jax.llm.cleaning import strip_markup


@pytest.mark.parametrize("raw, expected", [
    # env.clean_output: a rewritten description.
    ("Here is a re-written version of the movie description:\n\n\"A detective chases a "
     "ghost.\"\n\nThis re-written description keeps the suspense.",
     "\n\"A detective chases a ghost.\"\n\nThis re-written description keeps the suspense."),
    ("**Rewritten description:** A robot hunts an arsonist on *Mars*. The `colony` burns.",
     "Rewritten description: A robot hunts an arsonist on Mars. The colony burns."),
    ("Certainly. Revised description:\n- A chef opens a diner on the moon.",
     "- A chef opens a diner on the moon."),
    ("Sure! Here you go:", ""),
    # actions.llm_source.parse_action_list: a list whose bullets and indentation still count.
    ("Sure! Here's a list of ways to change the movie:\n**Plot changes:**\n"
     "1. **Change the setting:** Move the story to a space station.\n"
     "   - This would add a *sci-fi* flavour.\n"
     "* Cut the __second__ act\n"
     "#2. Give the sidekick a secret past.\n"
     "  ## 3. Add a heist.",
     "1. Change the setting: Move the story to a space station.\n"
     "   - This would add a sci-fi flavour.\n"
     "* Cut the second act\n"
     "2. Give the sidekick a secret past.\n"
     "  3. Add a heist."),
    # data.profiles: a prose summary.
    ("Here is the profile:\n**This viewer** loves crime films.\n\nThey avoid romance.",
     "This viewer loves crime films.\n\nThey avoid romance."),
    ("   ", "   "),
])
def test_strip_markup_removes_markdown_and_preface_lines(raw, expected):
  assert strip_markup(raw) == expected
