"""Reading small instruct models' answers: the wrapping removed, the answer checked.

SmolLM2 and Gemma 3 270M format answers as chat messages: bold labels, headings, code marks,
and a line that announces the answer ("Sure! Here are 5 actions:"). Callers read plain text
(a rewritten description, a list of actions, a profile summary), so `strip_markup` removes
that shared wrapping; what each caller reads from the rest (paragraphs, list items, quotes,
trailing notes) stays with it. `clean_output` reads one prose answer (a rewritten or newly
written description) and says why it is degenerate when it is.
"""

from __future__ import annotations

import difflib
import re
from typing import Sequence

_MARKS = re.compile(r"\*\*|__|`")
_HEADING = re.compile(r"^([ \t]*)#+[ \t]*")
_BULLET = re.compile(r"^[ \t]*\*[ \t]")


def strip_markup(text: str) -> str:
  """`text` without markdown marks and without preface lines, line by line.

  Removes bold and code marks (`**`, `__`, backticks), every `*` but a list bullet's
  (`*emphasis*`, stray stars), heading marks (`#`) at a line's start, and every line that
  ends in a colon: prefaces ("Here is the new description:") and section headers
  ("**Plot changes:**") announce text, they are not text. Line breaks, indentation and list
  markers are kept, so paragraphs and list items can still be told apart.
  """
  kept = []
  for line in text.splitlines():
    line = _HEADING.sub(r"\1", _MARKS.sub("", line))
    bullet = _BULLET.match(line)
    start = bullet.end() if bullet else 0
    line = line[:start] + line[start:].replace("*", "")
    if not line.rstrip().endswith(":"):
      kept.append(line)
  return "\n".join(kept)


ECHO_SIMILARITY = 0.9  # Word-sequence similarity above which a rewrite is an echo.
MIN_REWRITE_WORDS = 3  # Fewer words than this is an empty rewrite.

_PREFACES = tuple(re.compile(p, re.IGNORECASE) for p in (
    # "Sure! ...", "Certainly. ...", "Of course, here is ...:"
    r"^(?:sure|certainly|of course|absolutely|okay|ok|great)\b[^\n.!:]*[.!:]\s*",
    # "Here is a re-written version of the description:", "Here you go:"
    r"^(?:here\b|below is)[^\n:]*:\s*",
    # "Rewritten:", "New description:", "Revised movie description:"
    r"^(?:(?:new|rewritten|re-written|revised|updated|modified)\s+)?(?:movie\s+)?"
    r"(?:description|version|synopsis|rewrite|rewritten|re-written)\s*:\s*",
))
_NOTE = re.compile(
    r"^\(?(?:note\b|this (?:re-?written|revised|new|updated|modified) (?:description|version)"
    r"|in this (?:re-?written|revised|new|updated) (?:description|version)|i hope|let me know"
    r"|i (?:have|'ve) (?:re-?written|revised|changed|kept|made)"
    r"|the (?:re-?written|revised|new) description)", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?][\"'”’)\]]*(?=\s|$)")
_QUOTES = {'"': '"', "“": "”", "'": "'", "‘": "’"}


def instruction_markers(*templates: str) -> tuple[str, ...]:
  """The first 3 words of every clause the prompt templates write themselves ("rewrite the
  description", "keep it a", ...): a rewrite that contains one is quoting its prompt."""
  markers = []
  for template in templates:
    literal = re.sub(r"\{\w+\}", "|", template)
    for clause in re.split(r"[|.:;!?\n]", literal):
      words = _words(clause)
      if len(words) >= 3:
        markers.append(" ".join(words[:3]))
  return tuple(dict.fromkeys(markers))


def clean_output(text: str, original: str, max_chars: int, *, finished: bool = True,
                 markers: Sequence[str] = ()) -> tuple[str, str | None]:
  """Extracts the rewrite from a raw LLM answer; returns (text, None or degeneracy reason).

  Reasons: "empty" (fewer than MIN_REWRITE_WORDS words), "truncated" (cut by max_new_tokens
  before any sentence ended), "echo" (near-copy of `original`), "prompt_leak" (contains one of
  the `instruction_markers`: E_D would score the prompt's words, not a description),
  "too_long" (over max_chars).
  `finished` is False when generation ran into max_new_tokens: the trailing fragment is
  then cut at the last sentence end (it is cut anyway when it has no end punctuation).
  """
  text = _strip_list_marks(strip_markup(text).strip())
  changed = True
  while changed:  # Prefaces stack: "Sure! Here is the new description:\n\n..."
    changed = False
    for pattern in _PREFACES:
      stripped = pattern.sub("", text, count=1).strip()
      if stripped != text:
        text, changed = stripped, True
  text = _first_paragraph(text)
  text = _drop_notes(text)
  text = _strip_quotes(text)
  ends = list(_SENTENCE_END.finditer(text))
  if ends:
    text = text[:ends[-1].end()]
  elif not finished:
    return text, "truncated" if _words(text) else "empty"
  if len(_words(text)) < MIN_REWRITE_WORDS:
    return text, "empty"
  if _similarity(text, original) >= ECHO_SIMILARITY:
    return text, "echo"
  flat = " " + " ".join(_words(text)) + " "
  if any(f" {m} " in flat for m in markers):
    return text, "prompt_leak"
  if len(text) > max_chars:
    return text, "too_long"
  return text, None


def _strip_list_marks(text: str) -> str:
  """Drops bullets and blockquote marks at line starts: a rewrite is prose, not a list."""
  return re.sub(r"^\s*(?:[-*•]|>)\s+", "", text, flags=re.MULTILINE)


def _first_paragraph(text: str) -> str:
  """The first non-empty paragraph, with its line breaks joined."""
  for paragraph in re.split(r"\n\s*\n", text):
    if paragraph.strip():
      return " ".join(line.strip() for line in paragraph.splitlines() if line.strip())
  return ""


def _drop_notes(text: str) -> str:
  """Drops the first sentence that comments on the rewrite ("This re-written ...") and after."""
  starts = [0] + [m.end() for m in _SENTENCE_END.finditer(text)]
  for start in starts[1:]:
    if _NOTE.match(text[start:].lstrip()):
      return text[:start].strip()
  return text


def _strip_quotes(text: str) -> str:
  if text[:1] in _QUOTES:
    close = _QUOTES[text[0]]
    inner = text[1:]
    if close not in inner:  # An opening quote whose answer was cut off.
      return inner.strip()
    trimmed = inner.rstrip()
    if trimmed.endswith(close) and close not in trimmed[:-1] and text[0] not in trimmed[:-1]:
      return trimmed[:-1].strip()
  return text


def _words(text: str) -> list[str]:
  return re.findall(r"[a-z0-9']+", text.lower())


def _similarity(a: str, b: str) -> float:
  return difflib.SequenceMatcher(None, _words(a), _words(b), autojunk=False).ratio()
