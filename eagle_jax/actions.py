"""Candidate actions A(x, u): the edit prompts the policy chooses from (paper §4.3, §5.1).

The paper has Gemini Ultra write 100 actions per movie (50 generic, 50 personalised with a
user profile) across five categories. Here they come from an LLM (`source="llm"`), from a
hand-curated domain library whose templates are filled from the movie and the profile
(`source="library"`), or both (`source="mixed"`: the LLM's first, the library tops up).
Every set is deterministic given its seed, balanced across categories, and deduplicated;
`ActionCache` stores one file per (movie, user) so a long run resumes where it stopped.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import math
import pathlib
import re
import string
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import tqdm

from eagle_jax import artifacts
from eagle_jax.data.descriptions import frequent_tags
from eagle_jax.data.profiles import UserProfile, content_genres
from eagle_jax.errors import EagleError

GenerateFn = Callable[[list[str]], list[str]]

KINDS = ("generic", "personalised")
SOURCES = ("library", "llm", "mixed")
# The paper's five categories, asked for to make the action set diverse.
CATEGORIES = ("plot", "characters", "visuals", "themes", "audience")
CATEGORY_DESCRIPTIONS = {
    "plot": "plot changes",
    "characters": "character enhancements",
    "visuals": "visual and storytelling improvements",
    "themes": "thematic exploration",
    "audience": "audience-appeal adjustments",
}
MIN_WORDS, MAX_WORDS = 3, 24  # Actions are short imperative sentences (< 25 words).

# ---------------------------------------------------------------------------------------------
# The domain library: slot vocabularies and templates.
# ---------------------------------------------------------------------------------------------

# Static slot vocabularies. A template writes "a {genre} film"; `_fix_articles` makes it "an".
VOCAB: dict[str, tuple[str, ...]] = {
    "archetype": (
        "a mentor", "a rival", "a loyal sidekick", "a double agent", "an estranged sibling",
        "a reluctant hero", "a charming con artist", "a retired detective",
        "a mysterious stranger", "a corrupt official", "a child prodigy",
        "a disgraced scientist", "a street-smart teenager", "a grieving widow",
        "a ruthless tycoon", "a loyal robot", "an eccentric inventor", "a former soldier",
        "a fortune teller", "a small-town sheriff", "a rebellious heir",
        "an undercover journalist"),
    "setting": (
        "a remote Arctic research station", "a sprawling near-future megacity",
        "a sleepy coastal town", "an orbiting space station", "a desert mining colony",
        "a crumbling Gothic mansion", "a bustling night market", "a snowbound mountain village",
        "a luxury ocean liner", "a post-apocalyptic wasteland", "a tropical island resort",
        "an underground city", "a strict boarding school", "a travelling circus",
        "a Hollywood film set", "a medieval castle", "a submarine on patrol",
        "a haunted lighthouse"),
    "era": (
        "the Roaring Twenties", "the 1950s", "the 1970s", "the 1980s", "Victorian London",
        "ancient Rome", "feudal Japan", "the American Old West", "the Second World War",
        "the Cold War", "the Renaissance", "the distant future", "the near future",
        "the Middle Ages", "the Prohibition era", "the swinging sixties",
        "the early days of the internet"),
    "tone": (
        "darker", "lighter", "more whimsical", "grittier", "more satirical", "more melancholic",
        "more suspenseful", "more hopeful", "more absurd", "more romantic", "more intimate",
        "more epic", "more playful", "more unsettling", "more nostalgic"),
    "theme": (
        "redemption", "family loyalty", "identity", "the cost of ambition", "grief and healing",
        "friendship", "power and corruption", "technology and humanity", "social class",
        "forgiveness", "coming of age", "freedom", "memory", "trust and betrayal",
        "environmental collapse", "justice", "sacrifice", "belonging", "faith and doubt",
        "greed"),
    "style": (
        "black-and-white cinematography", "long single-take sequences",
        "handheld documentary-style camera work", "a saturated neon colour palette",
        "stop-motion animation", "practical effects and stunts", "sweeping aerial shots",
        "stark high-contrast lighting", "a muted, washed-out palette",
        "dynamic camera angles and fast editing", "symmetrical storybook framing",
        "slow-motion set pieces", "found-footage sequences", "hand-drawn animation",
        "split-screen sequences", "candlelit interiors", "rain-soaked night scenes"),
    "device": (
        "a nonlinear timeline", "voice-over narration", "a framing story",
        "an unreliable narrator", "multiple points of view", "a countdown structure",
        "a series of flashbacks", "on-screen chapter titles", "a story within a story",
        "a real-time structure"),
    "audience": (
        "families", "teenagers", "older viewers", "young children", "international audiences",
        "date-night couples", "arthouse audiences", "casual weekend viewers",
        "college students", "history buffs", "sports fans", "gamers"),
}
# Slots filled from the movie: genres it lacks / has (as words), and its most used user tags.
MOVIE_SLOTS = ("new_genre", "own_genre", "tag")
# Slots filled from the profile; every personalised template uses at least one of them.
PROFILE_SLOTS = ("liked_genre", "disliked_genre", "liked_movie", "disliked_movie", "user_tag")

# Genre names as they read inside a sentence ("a noir film", "a children's film").
_GENRE_WORDS = {"Children": "children's", "Children's": "children's", "Film-Noir": "noir",
                "Sci-Fi": "sci-fi"}

TEMPLATES: dict[tuple[str, str], tuple[str, ...]] = {
    ("generic", "plot"): (
        "Add a twist in which {archetype} turns out to be behind everything.",
        "Shift the setting to {setting}.",
        "Move the story to {era}.",
        "Make it more of a {new_genre} film.",
        "Blend {new_genre} elements into the plot.",
        "Tone down the {own_genre} elements of the plot.",
        "Lean harder into the {own_genre} side of the story.",
        "Emphasise what viewers tag as {tag}.",
        "Add a subplot about {theme}.",
        "Give the story a bittersweet ending.",
        "Replace the climax with a showdown against {archetype}.",
        "Add a ticking-clock deadline that forces the hero to act.",
        "Start the story in the middle of a crisis.",
        "Add a heist subplot set in {setting}.",
        "Reveal a hidden family connection between the hero and {archetype}.",
        "Let the villain win in the end.",
        "Introduce a betrayal by {archetype} halfway through.",
        "Cut the romantic subplot.",
        "Add a cliffhanger ending that sets up a sequel.",
        "Add a chase sequence through {setting}.",
        "Make the ending {tone}.",
        "Raise the stakes so the fate of {setting} hangs in the balance.",
    ),
    ("generic", "characters"): (
        "Add {archetype} as a new supporting character.",
        "Give the protagonist a rivalry with {archetype}.",
        "Make the villain more sympathetic with a tragic backstory.",
        "Give the lead a secret from their past.",
        "Add a mentor figure who guides the hero.",
        "Give {archetype} a bigger role as the hero's confidant.",
        "Make the protagonist an outsider from {setting}.",
        "Give the hero a personal flaw they must overcome.",
        "Deepen the friendship between the two leads.",
        "Swap the gender of the lead character.",
        "Make the antagonist {archetype}.",
        "Give the main character an arc about {theme}.",
        "Add a comic-relief sidekick.",
        "Make the hero older and wiser.",
        "Give the supporting cast more screen time.",
        "Reveal that the narrator is {archetype}.",
        "Make the protagonist {tone}.",
        "Add an ensemble of misfits who help the hero.",
        "Pair the lead with {archetype} as an unlikely partner.",
        "Turn the love interest into {archetype}.",
        "Give every main character a motive tied to {theme}.",
        "Make the lead a {own_genre} archetype with a surprising weakness.",
    ),
    ("generic", "visuals"): (
        "Shoot it with {style}.",
        "Tell the story through {device}.",
        "Use {style} for the key scenes.",
        "Give the film a {tone} colour palette.",
        "Add more dynamic camera angles and editing.",
        "Use more practical effects and stunts.",
        "Speed up the pacing of the second act.",
        "Restructure the story around {device}.",
        "Open with a striking long take.",
        "Add {device} to the storytelling.",
        "Give the finale the visual style of a {new_genre} film.",
        "Borrow the visual language of classic {own_genre} films.",
        "Use a recurring visual motif tied to {theme}.",
        "Stage the climax in {setting}.",
        "Add a memorable musical score with a recurring theme.",
        "Show key events from the point of view of {archetype}.",
        "Replace exposition with visual storytelling.",
        "Make what viewers tag as {tag} visually striking.",
        "Add a montage set to music from {era}.",
        "Use weather and lighting to make the mood {tone}.",
        "Recreate the look of films from {era}.",
    ),
    ("generic", "themes"): (
        "Explore the theme of {theme}.",
        "Make {theme} the central theme.",
        "Add a subtext about {theme} in {era}.",
        "Make the story a meditation on {theme}.",
        "Explore how {archetype} wrestles with {theme}.",
        "Add social commentary on inequality.",
        "Explore the moral cost of the hero's choices.",
        "Tie the ending to the theme of {theme}.",
        "Give the story an environmental message.",
        "Explore what viewers tag as {tag} more deeply.",
        "Make the overall tone {tone}.",
        "Use the {own_genre} conventions to explore {theme}.",
        "Recast the story as an allegory of {theme}.",
        "Explore the hero's relationship with their family.",
        "Question whether the hero's victory was worth the price.",
        "Add a spiritual dimension to the story.",
        "Explore the clash between tradition and modernity.",
        "Reframe the conflict as a struggle over {theme}.",
        "Add a political undercurrent drawn from {era}.",
        "Explore {theme} through {new_genre} storytelling.",
    ),
    ("generic", "audience"): (
        "Make it appeal to {audience}.",
        "Add humour aimed at {audience}.",
        "Shorten the runtime to under 100 minutes.",
        "Lower the age rating by cutting graphic violence.",
        "Add a catchy theme song.",
        "Cast a well-known star in the lead role.",
        "Give it a crowd-pleasing happy ending.",
        "Add {new_genre} elements to widen its audience.",
        "Tone down the {own_genre} elements to reach {audience}.",
        "Make it a family-friendly adventure.",
        "Add references that {audience} will recognise.",
        "Play up what its fans tag as {tag}.",
        "Make the {own_genre} elements more accessible to newcomers.",
        "Add action set pieces for thrill-seekers.",
        "Add a romance to broaden its appeal.",
        "Set up a franchise with an open ending.",
        "Rework it into a {new_genre} crowd-pleaser for {audience}.",
        "Add a diverse ensemble cast to broaden its appeal.",
        "Make the dialogue snappier and more quotable.",
        "Simplify the plot so it works for {audience}.",
        "Add a heartwarming animal companion.",
    ),
    ("personalised", "plot"): (
        "Add plot elements this viewer loves: {liked_genre}.",
        "Give the plot the feel of {liked_movie}.",
        "Remove the plot elements this viewer dislikes: {disliked_genre}.",
        "Move the story to {setting} and add {liked_genre} twists.",
        "Structure the plot like {liked_movie}.",
        "Avoid plot turns that feel like {disliked_movie}.",
        "Build the plot around what this viewer tags as {user_tag}.",
        "Add a twist in the style of {liked_movie}.",
        "Replace the {disliked_genre} plot beats with {liked_genre} ones.",
        "Shift the story to {era} with a {liked_genre} edge.",
        "Give it an ending in the spirit of {liked_movie}.",
        "Cut the subplots that resemble {disliked_movie}.",
        "Add a {liked_genre} subplot involving {archetype}.",
        "Borrow the central conflict of {liked_movie}.",
        "Steer the plot away from {disliked_genre} territory.",
        "Give the hero a goal that fans of {liked_movie} would root for.",
    ),
    ("personalised", "characters"): (
        "Add a character straight out of {liked_movie}.",
        "Make the hero resemble the lead of {liked_movie}.",
        "Introduce {archetype} with a {liked_genre} backstory.",
        "Remove the {disliked_genre} traits from the characters.",
        "Write the villain like the antagonist of {liked_movie}.",
        "Make the characters less like those in {disliked_movie}.",
        "Give the main character traits this viewer tags as {user_tag}.",
        "Add {archetype} who would fit in a {liked_genre} film.",
        "Give the supporting cast the chemistry of {liked_movie}.",
        "Turn the sidekick into a {liked_genre} hero.",
        "Cut the characters that feel like {disliked_genre} clichés.",
        "Make the protagonist's journey echo {liked_movie}.",
        "Give the hero the wit of the characters in {liked_movie}.",
        "Make the villain a {liked_genre} figure this viewer would enjoy.",
        "Give the characters dialogue in the style of {liked_movie}.",
    ),
    ("personalised", "visuals"): (
        "Shoot it in the visual style of {liked_movie}.",
        "Give it the feel of {liked_movie}.",
        "Use {liked_genre} visual conventions for the climax.",
        "Avoid the look of {disliked_movie}.",
        "Drop the {disliked_genre} imagery this viewer dislikes.",
        "Pace it like {liked_movie}.",
        "Use {style} as in this viewer's favourite {liked_genre} films.",
        "Use imagery this viewer would tag as {user_tag}.",
        "Tell the story with the structure of {liked_movie}.",
        "Use {device}, as {liked_genre} films often do.",
        "Score it like a {liked_genre} film.",
        "Give the opening scene the energy of {liked_movie}.",
        "Match the colour palette of {liked_movie}.",
        "Use the editing rhythm of {liked_movie}.",
        "Stage the climax like a {liked_genre} set piece.",
    ),
    ("personalised", "themes"): (
        "Explore the themes this viewer loves in {liked_movie}.",
        "Explore {theme} the way {liked_movie} does.",
        "Frame {theme} through a {liked_genre} lens.",
        "Move away from the {disliked_genre} themes this viewer dislikes.",
        "Emphasise what this viewer tags as {user_tag}.",
        "Make the story's message closer to that of {liked_movie}.",
        "Avoid the heavy-handed themes of {disliked_movie}.",
        "Add {liked_genre} themes this viewer loves.",
        "Replace {disliked_genre} themes with {theme}.",
        "Explore {theme} in a way this viewer would tag as {user_tag}.",
        "Give the ending the emotional weight of {liked_movie}.",
        "Make the tone {tone}, like {liked_movie}.",
        "Tie the story to the ideas behind {liked_movie}.",
        "Give {theme} a {liked_genre} treatment.",
        "Avoid the message of {disliked_movie}.",
    ),
    ("personalised", "audience"): (
        "Make it appeal to fans of {liked_movie}.",
        "Make it appeal to {liked_genre} fans like this viewer.",
        "Remove what this viewer dislikes: {disliked_genre}.",
        "Add elements this viewer loves: {liked_genre}.",
        "Cut anything that resembles {disliked_movie}.",
        "Add moments this viewer would tag as {user_tag}.",
        "Make it a {liked_genre} crowd-pleaser for this viewer.",
        "Tone down the {disliked_genre} content to suit this viewer.",
        "Add nods for viewers who loved {liked_movie}.",
        "Make it as rewatchable as {liked_movie}.",
        "Balance the {own_genre} content with {liked_genre} for this viewer.",
        "Make it less like {disliked_movie} and more like {liked_movie}.",
        "Add {liked_genre} moments to hook this viewer.",
        "Keep the {disliked_genre} elements this viewer dislikes to a minimum.",
        "Give it a finale as satisfying as the one in {liked_movie}.",
    ),
}

# Imperative verbs an action may start with: the test for "is an instruction".
VERBS = frozenset("""
adapt add address adjust age allow alter amplify anchor avoid balance base blend boost borrow
bring build cast center centre change channel combine compress condense consider contrast
convert craft create cut darken deepen delete depict develop devote ditch downplay drop echo
elevate eliminate embrace emphasise emphasize end enhance enrich establish evoke examine expand
explore extend feature fill flesh flip focus follow foreshadow frame fuse give ground heighten
highlight hint imbue improve include incorporate increase infuse inject insert integrate
intensify introduce invert keep kill layer lean lengthen let lighten limit lower make match
merge minimise minimize mix modernise modernize move narrow offer omit open pace pair pick place
play portray provide push put question raise recast recreate redesign reduce refocus reframe
reimagine reinvent relocate remove rename reorder replace restructure retell reveal revise
rework rewrite root save score set shift shoot shorten show showcase simplify slow soften speed
split spotlight stage start steer streamline strengthen stress structure subvert swap switch
tell tie tighten tone transform transplant try turn twist underline underscore update use weave
widen write
""".split())


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
        if action_key(action) not in seen and MIN_WORDS <= len(action.split()) <= MAX_WORDS:
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


def category_quotas(n: int, categories: Sequence[str] = CATEGORIES) -> dict[str, int]:
  """`n` split over categories as evenly as possible (the first ones get the remainder)."""
  if n < 0:
    raise EagleError(f"the number of actions must be >= 0, got {n}")
  base, extra = divmod(n, len(categories))
  return {c: base + (i < extra) for i, c in enumerate(categories)}


# ---------------------------------------------------------------------------------------------
# The LLM source: prompt, robust parsing of its list.
# ---------------------------------------------------------------------------------------------

_PROMPT = (
    "Here is a movie description:\n{description}\n\n{profile}"
    "List {n} actionable ways to change this movie{for_viewer}, all of them {category}. "
    "Write each as one short imperative sentence of under {max_words} words, such as "
    "\"{example}\". Number them 1 to {n}, one per line, with no explanations.")
_EXAMPLES = {
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
      for_viewer=" for this viewer" if profile else "", max_words=MAX_WORDS + 1,
      example=_EXAMPLES[category])


_MARKER = re.compile(r"^(?:#+\s*)?(?:\(?\d{1,3}\s*[.):]|[-*•·–—+>])\s*")
_INLINE_ITEM = re.compile(r"\s+(?=\(?\d{1,3}[.)]\s)")  # "1. Add a. 2. Cut b." on one line
_QUOTES = "\"'“”‘’"
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "e.g", "i.e", "etc"})
_COMMENTARY = re.compile(
    r"(?:\s+[—–-]+\s+|,\s+)(?=(?:this|which|that would|it|so that|because|as this)\b)", re.I)


def parse_action_list(text: str) -> tuple[list[str], int]:
  """Actions from an LLM's list and the count of non-blank lines that gave none.

  Accepts numbered ("1.", "1)"), bulleted ("-", "*", "•") and plain lines. Strips markdown,
  quotes, a "Label:" prefix, and commentary after the first sentence, a dash, ", which" or
  a trailing parenthesis. Rejects prefaces, notes, questions, lines that do not start with
  an imperative verb or fall outside MIN_WORDS..MAX_WORDS words, items indented under
  another item (elaborations), and duplicates (case- and punctuation-insensitive).
  """
  lines, indents = [], []
  for line in text.expandtabs(4).splitlines():
    item = line.strip().lstrip(_QUOTES)
    if not item:
      continue
    # Small models often run a whole numbered list together on one line.
    parts = _INLINE_ITEM.split(item) if _MARKER.match(item) else [line.strip()]
    lines += parts
    indents += [len(line) - len(line.lstrip())] * len(parts)
  item_indents = [i for line, i in zip(lines, indents) if _MARKER.match(line.lstrip(_QUOTES))]
  item_level = min(item_indents, default=0)
  actions, seen, rejected = [], set(), 0
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
  s = _MARKER.sub("", line.lstrip(_QUOTES), count=1)
  s = re.sub(r"\*\*|__|`|^#+\s*", "", s).replace("*", "").strip()
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
  if not MIN_WORDS <= len(s.split()) <= MAX_WORDS:
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


# ---------------------------------------------------------------------------------------------
# Candidate sets.
# ---------------------------------------------------------------------------------------------


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
  for k in KINDS:
    for c in CATEGORIES:
      for action, source in blocks.get((k, c), ()):
        cs.actions.append(action)
        cs.kinds.append(k)
        cs.categories.append(c)
        cs.sources.append(source)
  return cs


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
  seen = {action_key(e) for e in _EXAMPLES.values()}
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


def _kind_quotas(num_generic: int, num_personalised: int,
                 profile: UserProfile | None) -> dict[str, dict[str, int]]:
  if num_personalised and profile is None:
    raise EagleError(f"num_personalised={num_personalised} needs a user profile (got none)")
  return {"generic": category_quotas(num_generic),
          "personalised": category_quotas(num_personalised)}


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


# ---------------------------------------------------------------------------------------------
# Cache: one file per (movie, user), so an interrupted run resumes.
# ---------------------------------------------------------------------------------------------

Key = tuple[int, int]  # (movie_id, user_id)


class ActionCache:
  """Candidate sets stored as `<movie_id>_<user_id>.json` files, each written atomically.

  `meta` records how the sets were made (counts, source, seed); reopening the folder with
  different `meta` is an error rather than a silent mix of two kinds of action set.
  """

  def __init__(self, directory: str | pathlib.Path, meta: Mapping[str, Any] | None = None):
    self.directory = pathlib.Path(directory)
    meta_path = self.directory / "meta.json"
    if meta is None:
      return
    if meta_path.exists():
      stored = artifacts.read_json(meta_path)
      if stored != json.loads(json.dumps(dict(meta))):
        raise EagleError(f"action cache {self.directory} was built with {stored}, not "
                         f"{dict(meta)}: delete it or choose another folder")
    else:
      artifacts.write_json(meta_path, dict(meta))

  def path(self, key: Key) -> pathlib.Path:
    movie_id, user_id = key
    return self.directory / f"{int(movie_id)}_{int(user_id)}.json"

  def has(self, key: Key) -> bool:
    return self.path(key).exists()

  def get(self, key: Key) -> CandidateSet | None:
    path = self.path(key)
    if not path.exists():
      return None
    try:
      return CandidateSet.from_dict(artifacts.read_json(path))
    except (json.JSONDecodeError, KeyError, TypeError) as e:
      raise EagleError(f"action cache file {path} is not a candidate set: {e}") from e

  def put(self, key: Key, candidates: CandidateSet) -> None:
    artifacts.write_json(self.path(key), candidates.to_dict())

  def iter_missing(self, keys: Iterable[Key]) -> Iterator[Key]:
    return (k for k in keys if not self.has(k))


def fill_action_cache(cache: ActionCache, catalogue, keys: Sequence[Key],
                      descriptions: Mapping[int, str], profiles: Mapping[int, UserProfile],
                      **kwargs) -> int:
  """Makes the candidate set of every (movie_id, user_id) not yet cached; returns how many.

  `kwargs` go to `candidate_actions`. Each set is stored as soon as it is made, so an
  interrupted run loses at most one set.
  """
  missing = list(cache.iter_missing(keys))
  if "library" not in kwargs:
    kwargs["library"] = ActionLibrary.from_catalogue(catalogue)
  for movie_id, user_id in tqdm.tqdm(missing, desc="actions", unit="pair"):
    if movie_id not in descriptions:
      raise EagleError(f"no description for movie {movie_id} (needed for its actions)")
    if user_id not in profiles:
      raise EagleError(f"no profile for user {user_id} (needed for its actions)")
    cache.put((movie_id, user_id), candidate_actions(
        catalogue, catalogue.movie_index(movie_id), descriptions[movie_id], profiles[user_id],
        **kwargs))
  return len(missing)
