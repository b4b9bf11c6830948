"""The LLM as a source of actions: the request for one category's list, and its reading.

Small models answer with numbered or bulleted lists wrapped in prefaces, labels, quotes and
commentary; `parse_action_list` keeps only lines that read as one short instruction.
"""

from __future__ import annotations

import re

from eagle_jax.actions.library import action_key
from eagle_jax.actions.vocabulary import (CATEGORIES, CATEGORY_DESCRIPTIONS, MAX_ACTION_WORDS,
                                          MIN_ACTION_WORDS, VERBS)
from eagle_jax.world.profiles import UserProfile
from eagle_jax.errors import EagleError
from eagle_jax.llm.cleaning import strip_markup

_PROMPT = (
    "Here is a movie description:\n{description}\n\n{profile}"
    "List {n} actionable ways to change this movie{for_viewer}, all of them {category}. "
    "Write each as one short imperative sentence of under {max_words} words, such as "
    "\"{example}\". Number them 1 to {n}, one per line, with no explanations.")
# One example action per category, shown in the prompt.
PROMPT_EXAMPLES = {
    "plot": "Add a twist in which the mentor is the real villain.",
    "characters": "Give the sidekick a secret past.",
    "visuals": "Tell the story through flashbacks.",
    "themes": "Explore the theme of forgiveness.",
    "audience": "Make it appeal to teenagers.",
}


def llm_action_prompt(description: str, profile: UserProfile | None, category: str,
                      n: int) -> str:
  """The request for `n` actions of one category; personalised when a profile is given."""
  if category not in CATEGORY_DESCRIPTIONS:
    raise EagleError(f"unknown action category {category!r} (expected one of {CATEGORIES})")
  return _PROMPT.format(
      description=description.strip(), n=n, category=CATEGORY_DESCRIPTIONS[category],
      profile=f"Here is a viewer's profile:\n{profile.prompt_text.strip()}\n\n" if profile else "",
      for_viewer=" for this viewer" if profile else "", max_words=MAX_ACTION_WORDS + 1,
      example=PROMPT_EXAMPLES[category])


_MARKER = re.compile(r"^(?:\(?\d{1,3}\s*[.):]|[-*•·–—+>])\s*")
_INLINE_ITEM = re.compile(r"\s+(?=\(?\d{1,3}[.)]\s)")  # "1. Add a. 2. Cut b." on one line
_QUOTES = "\"'“”‘’"
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "e.g", "i.e", "etc"})
_COMMENTARY = re.compile(
    r"(?:\s+[—–-]+\s+|,\s+)(?=(?:this|which|that would|it|so that|because|as this)\b)", re.I)


def parse_action_list(text: str) -> tuple[list[str], int]:
  """Actions from an LLM's list and the count of non-blank lines that gave none.

  Accepts numbered ("1.", "1)"), bulleted ("-", "*", "•") and plain lines. Strips markup and
  preface lines (`strip_markup`), quotes, a "Label:" prefix, and commentary after the first
  sentence, a dash, ", which" or a trailing parenthesis. Rejects notes, questions, lines that
  do not start with an imperative verb or fall outside MIN_ACTION_WORDS..MAX_ACTION_WORDS
  words, items indented under another item (elaborations), and duplicates (case- and
  punctuation-insensitive).
  """
  lines, indents, rejected = [], [], 0
  for raw in text.expandtabs(4).splitlines():
    line = strip_markup(raw)
    item = line.strip().lstrip(_QUOTES)
    if not item:
      rejected += bool(raw.strip() and not line.strip())  # A preface or bare markup.
      continue
    # Small models often run a whole numbered list together on one line.
    parts = _INLINE_ITEM.split(item) if _MARKER.match(item) else [line.strip()]
    lines += parts
    indents += [len(line) - len(line.lstrip())] * len(parts)
  item_indents = [i for line, i in zip(lines, indents) if _MARKER.match(line.lstrip(_QUOTES))]
  item_level = min(item_indents, default=0)
  actions, seen = [], set()
  for line, indent in zip(lines, indents):
    action = None if indent > item_level else _clean_action(line)
    if action is None or action_key(action) in seen:
      rejected += 1
      continue
    seen.add(action_key(action))
    actions.append(action)
  return actions, rejected


def _clean_action(line: str) -> str | None:
  """One list line as a clean action sentence, or None when it is not an instruction."""
  s = _MARKER.sub("", line.lstrip(_QUOTES), count=1).strip()
  if s[:1] in _QUOTES or line[:1] in _QUOTES:
    s = s.strip(_QUOTES + " ")
  s = re.sub(r"^please\s+", "", s, flags=re.I)
  label = re.match(r"^([^:]{1,60}):\s+(\S.*)$", s)
  if label:
    if _starts_with_verb(label.group(2)):
      s = label.group(2)  # "Plot twist: Add a ..." -> "Add a ...".
    elif not _starts_with_verb(label.group(1)):
      return None  # "Note: these would ..."
  s = _first_sentence(s)
  s = _COMMENTARY.split(s, maxsplit=1)[0]
  s = re.sub(r"\s*\([^()]*\s[^()]*\)\s*[.!]?$", "", s)  # "(this adds suspense)", not "(1995)".
  s = s.strip().strip(_QUOTES).strip()
  if not s or s.endswith("?") or not _starts_with_verb(s):
    return None
  s = s.rstrip(".!;,: ") + "."
  if not MIN_ACTION_WORDS <= len(s.split()) <= MAX_ACTION_WORDS:
    return None
  return s[0].upper() + s[1:]


def _starts_with_verb(text: str) -> bool:
  words = [re.sub(r"[^a-z]", "", w.lower()) for w in text.split()[:3]]
  if words[:1] in (["dont"], ["never"]):  # "Don't make the hero too strong."
    words = words[1:]
  elif words[:2] == ["do", "not"]:
    words = words[2:]
  # "Let me know if ..." is chat, not an edit.
  return bool(words) and words[0] in VERBS and words[:2] not in (["let", "me"], ["let", "us"])


def _first_sentence(s: str) -> str:
  for m in re.finditer(r"[.!?]\s+(?=[A-Z\"“])", s):
    before = s[:m.start()].split()
    if not before or before[-1].lower() not in _ABBREVIATIONS:  # "Dr. Strangelove"
      return s[:m.start() + 1]
  return s
