"""The environment step: prompt building, output cleaning, degenerate fallbacks, and an
end-to-end rewrite through the real sampler on a tiny model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from eagle_jax import distributed
from eagle_jax.environment import rewrite as env
from eagle_jax.errors import EagleError
from eagle_jax.llm import cleaning, prompting
from eagle_jax.llm import sampler as sampler_lib
from tests.fakes import CHAT_TEMPLATE, CannedSampler, tiny_model

ORIGINAL = "A detective hunts a serial arsonist through a city gripped by a summer heat wave."


@pytest.mark.parametrize("raw, expected", [
    ("Here is a re-written version of the movie description:\n\n\"A detective chases a "
     "fire-starting ghost through a frozen city. She must stop him before spring.\"\n\n"
     "This re-written description aims to keep the suspense.",
     "A detective chases a fire-starting ghost through a frozen city. She must stop him "
     "before spring."),
    ("Sure! Here's the new description: A talking cat solves crimes in Paris. It is funny.",
     "A talking cat solves crimes in Paris. It is funny."),
    ("**Rewritten description:** A robot hunts an arsonist on *Mars*. The colony burns.",
     "A robot hunts an arsonist on Mars. The colony burns."),
    ("“A pirate queen sails the frozen north.” Note: I kept it short.",
     "A pirate queen sails the frozen north."),
    ("A pirate queen sails the frozen north.\nShe hunts a ghost ship. I hope this helps!",
     "A pirate queen sails the frozen north. She hunts a ghost ship."),
    ("Certainly. Revised description:\n- A chef opens a diner on the moon. Trouble follows!",
     "A chef opens a diner on the moon. Trouble follows!"),
])
def test_clean_output_strips_wrapping(raw, expected):
  assert cleaning.clean_output(raw, ORIGINAL, 800) == (expected, None)


@pytest.mark.parametrize("raw, finished, expected", [
    ("", True, ("", "empty")),
    ("Sure! Here you go:", True, ("", "empty")),
    (ORIGINAL.upper(), True, (ORIGINAL.upper(), "echo")),
    ("A detective hunts a serial arsonist through a city gripped by a heat wave.", True,
     ("A detective hunts a serial arsonist through a city gripped by a heat wave.", "echo")),
    ("A young chef opens a restaurant in Tokyo and fights to keep", False,
     ("A young chef opens a restaurant in Tokyo and fights to keep", "truncated")),
    ("A young chef opens a restaurant in Tokyo. She fights to keep", False,
     ("A young chef opens a restaurant in Tokyo.", None)),
    ("A young chef opens a restaurant in Tokyo", True,
     ("A young chef opens a restaurant in Tokyo", None)),
    ("A chef cooks. " * 10, True, (("A chef cooks. " * 10).strip(), "too_long")),
])
def test_clean_output_flags_degenerate(raw, finished, expected):
  assert cleaning.clean_output(raw, ORIGINAL, 100, finished=finished) == expected


def test_a_rewrite_that_quotes_its_prompt_is_a_prompt_leak():
  markers = cleaning.instruction_markers(env.DEFAULT_PROMPT_TEMPLATE, env.CONTEXT_TEMPLATE)
  assert markers == ("here is a", "rewrite the description", "keep it a", "answer with the",
                     "it is written")
  leak = "Genre: Comedy. Rewrite the description: Genre: Comedy."  # Seen from SmolLM2.
  assert cleaning.clean_output(leak, ORIGINAL, 800, markers=markers) == (leak, "prompt_leak")
  fine = "A comedian rewrites the rules of a small-town talent show. Chaos follows."
  assert cleaning.clean_output(fine, ORIGINAL, 800, markers=markers) == (fine, None)


def test_rewrite_cleans_and_falls_back_to_the_input():
  canned = CannedSampler(
      ["Here is the new description:\nA heist on a space station goes wrong.", "", ORIGINAL,
       "A quiet drama. Keep it a single paragraph."], [True, True, False, True])
  strategy = sampler_lib.Temperature(0.7)
  environment = env.EnvironmentLLM(canned, prompt_template=env.DEFAULT_PROMPT_TEMPLATE,
                                   max_new_tokens=48, strategy=strategy)
  entities = ["A heist goes wrong.", "A quiet drama.", ORIGINAL, "A loud comedy."]
  actions = ["set it in space.", "make it funnier", "add a dog", "make it quiet"]
  result = environment.rewrite(entities, actions,
                               context=["likes sci-fi", "", "hates dogs", ""], seed=5)
  assert result.texts == ["A heist on a space station goes wrong.", entities[1], ORIGINAL,
                          entities[3]]
  assert result.degenerate == [None, "empty", "echo", "prompt_leak"]
  prompts, kwargs = canned.calls[0]
  assert prompts[0] == (
      "Here is a movie description: A heist goes wrong.\nIt is written for this viewer: likes "
      "sci-fi\nRewrite the description following this change: set it in space. Keep it a "
      "single paragraph of at most 3 sentences. Answer with the new description only.")
  assert "viewer" not in prompts[1]  # An empty profile adds no context line.
  assert kwargs == dict(max_new_tokens=48, strategy=strategy, seed=5, stop=(),
                        apply_template=True)


def test_few_shot_prompt_for_base_models():
  canned = CannedSampler(["A dog bakes bread in Rome."], [True])
  environment = env.EnvironmentLLM(canned, prompt_template="Text: {entity}\n{context}Do: {action}",
                                   max_new_tokens=32, strategy=sampler_lib.Greedy(),
                                   few_shot=True, context_template="For: {profile}\n",
                                   examples=[("Old.", "change it", "New.")])
  result = environment.rewrite(["A cat naps."], ["add a dog"], context=["kids"])
  assert result.texts == ["A dog bakes bread in Rome."]
  prompts, kwargs = canned.calls[0]
  assert prompts == ["Text: Old.\nDo: change it\nRewritten: New.\n\n"
                     "Text: A cat naps.\nFor: kids\nDo: add a dog\nRewritten:"]
  assert kwargs["stop"] == ("\n\n", "\nText:") and kwargs["apply_template"] is False


def test_bad_inputs_are_user_errors():
  with pytest.raises(EagleError, match="must contain {action}"):
    env.EnvironmentLLM(None, prompt_template="Rewrite {entity}", max_new_tokens=8,
                       strategy=sampler_lib.Greedy())
  environment = env.EnvironmentLLM(CannedSampler([], []), max_new_tokens=8,
                                   prompt_template=env.DEFAULT_PROMPT_TEMPLATE,
                                   strategy=sampler_lib.Greedy())
  with pytest.raises(EagleError, match="2 entities, 1 actions"):
    environment.rewrite(["a", "b"], ["x"])


def test_chat_prompt_uses_the_template():
  lm = tiny_model(chat_template=CHAT_TEMPLATE)
  assert prompting.chat_prompt(lm, "hi", system="be brief") == (
      "<system>be brief\n<user>hi\n<assistant>")
  assert prompting.format_prompt(tiny_model(), "raw text") == "raw text"
  with pytest.raises(EagleError, match="no chat template"):
    prompting.chat_prompt(tiny_model(), "hi")


def test_rewrite_end_to_end_with_a_tiny_model():
  lm = tiny_model(chat_template=CHAT_TEMPLATE, eos_ids=())
  sampler = sampler_lib.Sampler(lm, buckets=(256,), batch_size=8)
  environment = env.EnvironmentLLM(sampler, prompt_template=env.DEFAULT_PROMPT_TEMPLATE,
                                   max_new_tokens=24, strategy=sampler_lib.Temperature(1.0))
  entities, actions = ["A heist goes wrong.", "A quiet drama."], ["set it in space", "add jokes"]
  result = environment.rewrite(entities, actions, seed=3)
  # The raw outputs are the sampler's continuations of the chat-templated prompts.
  direct = sampler.sample(environment.prompts(entities, actions), max_new_tokens=24,
                          strategy=sampler_lib.Temperature(1.0), seed=3)
  assert result.raw == direct.texts and direct.num_generated == [24, 24]
  for text, reason, raw, entity in zip(result.texts, result.degenerate, result.raw, entities):
    cleaned, expected_reason = cleaning.clean_output(raw, entity, 800, finished=False)
    assert reason == expected_reason
    assert text == (entity if reason else cleaned)


def test_greedy_answers_are_remembered_by_prompt_and_sampled_ones_never():
  class PlotPerPrompt:
    """A sampler whose answer names its prompt's action; records what it was asked."""

    def __init__(self):
      self.asked = []

    def sample(self, prompts, **kwargs):
      self.asked.append(list(prompts))
      texts = [f"A new plot where they {p.split('change: ')[1].split('.')[0]}." for p in prompts]
      n = len(prompts)
      return sampler_lib.SampleOutput(texts, [[]] * n, [np.zeros(0)] * n, [1] * n, [3] * n,
                                      [True] * n, tokens=3 * n)

  def environment(strategy, memo_size=100):
    return env.EnvironmentLLM(PlotPerPrompt(), prompt_template=env.DEFAULT_PROMPT_TEMPLATE,
                              max_new_tokens=8, strategy=strategy, memo_size=memo_size)

  greedy, fresh = environment(sampler_lib.Greedy()), environment(sampler_lib.Greedy(), 0)
  states = ["A heist goes wrong.", "A quiet drama.", "A heist goes wrong."]
  first = greedy.rewrite(states, ["add a dog", "add jokes", "add a dog"])
  assert greedy.sampler.asked == [greedy.prompts(states[:2], ["add a dog", "add jokes"])]
  assert first.remembered == 1 and first.tokens == 6  # The batch's repeat is asked once.
  second = greedy.rewrite(["A quiet drama.", "A heist goes wrong."], ["add jokes", "add a cat"])
  assert greedy.sampler.asked[1] == greedy.prompts(["A heist goes wrong."], ["add a cat"])
  assert second.remembered == 1 and second.tokens == 3
  for result, call in ((first, (states, ["add a dog", "add jokes", "add a dog"])),
                       (second, (["A quiet drama.", "A heist goes wrong."],
                                 ["add jokes", "add a cat"]))):
    assert result == dataclasses.replace(fresh.rewrite(*call), tokens=result.tokens,
                                         remembered=result.remembered)
  # Only the last memo_size prompts are kept: the oldest is asked again.
  small = environment(sampler_lib.Greedy(), memo_size=2)
  for action in ("add a dog", "add jokes", "add a cat", "add a dog"):
    small.rewrite(["A quiet drama."], [action])
  assert len(small.sampler.asked) == 4
  sampled = environment(sampler_lib.Temperature(0.7))
  sampled.rewrite(states[:1], ["add a dog"])
  assert sampled.rewrite(states[:1], ["add a dog"]).remembered == 0
  assert len(sampled.sampler.asked) == 2


@pytest.mark.slow
def test_smollm2_rewrite_is_a_clean_description():
  from eagle_jax.llm.weights import load_model
  sampler = sampler_lib.Sampler(load_model("smollm2"), buckets=(128,), batch_size=1,
                                mesh=distributed.make_mesh(1))  # Not 8 padded rows.
  environment = env.EnvironmentLLM(sampler, prompt_template=env.DEFAULT_PROMPT_TEMPLATE,
                                   max_new_tokens=64, strategy=sampler_lib.Greedy())
  result = environment.rewrite([ORIGINAL], ["set it on a spaceship"])
  assert result.degenerate == [None], result.raw
  text = result.texts[0]
  assert text != ORIGINAL and "description" not in text.lower() and text[-1] in ".!?\"", text
