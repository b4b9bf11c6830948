"""Prompt formats: the model's chat template for instruct models, few-shot text for base models.

Instruct models (SmolLM2-Instruct, ChatML) get each prompt as one user turn through their
own Jinja chat template plus the generation header. Base models without a template (Gemma 3
270M base) only continue text, so an instruction is shown through solved examples and the
answer is read up to the blank line that ends it.
"""

from __future__ import annotations

from typing import Callable, Sequence

from eagle_jax.errors import EagleError

# An LLM as profiles and actions call it: a batch of prompts in, one answer per prompt out.
GenerateFn = Callable[[list[str]], list[str]]


def has_chat_template(model) -> bool:
  """Whether `model` (a LoadedModel) ships a chat template."""
  return bool(model.chat_template or model.tokenizer.chat_template)


def chat_prompt(model, user_message: str, *, system: str | None = None) -> str:
  """`user_message` as one chat turn, ending with the assistant's generation header."""
  if not has_chat_template(model):
    raise EagleError(f"model {model.name} has no chat template: use a few-shot prompt "
                     "(or --no-chat-template) for a base model")
  messages = [{"role": "system", "content": system}] if system else []
  messages.append({"role": "user", "content": user_message})
  return model.tokenizer.apply_chat_template(
      messages, chat_template=model.chat_template or None, add_generation_prompt=True,
      tokenize=False)


def format_prompt(model, text: str) -> str:
  """The chat-templated prompt when the model has a template, else the raw text."""
  return chat_prompt(model, text) if has_chat_template(model) else text


def few_shot_prompt(examples: Sequence[tuple[str, str]], query: str, *,
                    answer_prefix: str) -> str:
  """Solved (instruction, answer) pairs separated by blank lines, then the open query.

    <instruction 1>
    <answer_prefix> <answer 1>

    ...
    <query>
    <answer_prefix>

  The model's answer ends at the next blank line: sample with stop=("\\n\\n", ...).
  """
  blocks = [f"{q.strip()}\n{answer_prefix} {a.strip()}" for q, a in examples]
  blocks.append(f"{query.strip()}\n{answer_prefix}")
  return "\n\n".join(blocks)
