"""The wrapping small instruct models put around an answer, removed before it is read.

SmolLM2 and Gemma 3 270M format answers as chat messages: bold labels, headings, code marks,
and a line that announces the answer ("Sure! Here are 5 actions:"). Callers read plain text
(a rewritten description, a list of actions, a profile summary), so `strip_markup` removes
that shared wrapping; what each caller reads from the rest (paragraphs, list items, quotes,
trailing notes) stays with it.
"""

from __future__ import annotations

import re

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
