"""The EAGLE environment transition: the frozen LLM rewrites an entity following an action.

x_{t+1} = LLM(prompt(x_t, a_t[, user profile])), then cleaned. Small models wrap answers in
prefaces ("Here is a re-written version...:"), quotes, markdown and trailing notes, or
return nothing useful; `llm.cleaning.clean_output` strips the wrapping and flags degenerate
outputs.
A degenerate rewrite falls back to the input text, so the episode continues, and its reason
is returned so runs can count them.

With keep_fields=True the entity is a described movie ("<fields> Plot: <prose>", see
`world/descriptions.py`): the LLM sees it whole, its answer becomes the new plot, and the
fields are kept, so every state stays in the one format E_D was fit on. An answer that
writes field labels breaks the format and is degenerate ("format").
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from typing import Sequence

from eagle_jax.world import descriptions
from eagle_jax.errors import EagleError
from eagle_jax.llm import prompting
from eagle_jax.llm import sampler as sampler_lib
from eagle_jax.llm.cleaning import clean_output, instruction_markers

DEFAULT_PROMPT_TEMPLATE = (
    "Here is a movie description: {entity}\n{context}Rewrite the description following this "
    "change: {action}. Keep it a single paragraph of at most 3 sentences. Answer with the new "
    "description only.")
CONTEXT_TEMPLATE = "It is written for this viewer: {profile}\n"

# Solved examples for base models (few_shot=True): (description, change, rewrite).
MOVIE_EXAMPLES = (
    ("A retired safecracker is pulled back for one last job in Lisbon, where his old partner "
     "is waiting to betray him.",
     "make it a comedy",
     "A clumsy retired safecracker is dragged into one last job in Lisbon, where his old "
     "partner keeps botching every plan. The heist turns into a chain of ridiculous mishaps."),
    ("Two sisters inherit a failing vineyard and must decide whether to sell it to a developer.",
     "set it in space",
     "Two sisters inherit a failing hydroponic vineyard on a Mars colony and must decide "
     "whether to sell it to a mining corporation."),
    ("A detective hunts a serial arsonist through a city gripped by a summer heat wave.",
     "make it suitable for young children",
     "A curious young detective and her dog find out who keeps lighting campfires in the "
     "park during a hot summer, and learn how firefighters keep everyone safe."),
)

ANSWER_PREFIX = "Rewritten:"

@dataclasses.dataclass(frozen=True)
class RewriteResult:
  """Rewritten texts (the input where degenerate), the reason or None, the raw outputs, the
  tokens the LLM generated for them (for throughput logging), and how many answers were
  remembered rather than generated (greedy decoding, `EnvironmentLLM`)."""

  texts: list[str]
  degenerate: list[str | None]
  raw: list[str]
  tokens: int = 0
  remembered: int = 0


class EnvironmentLLM:
  """One environment step for a batch of (entity, action[, user context]) triples.

  Instruct models get `prompt_template` through their chat template. With few_shot=True
  (base models), the same template shows `examples` solved after `ANSWER_PREFIX`, then the
  query; generation stops at the blank line that ends an answer or at the next example.

  Under greedy decoding the answer is a function of the prompt alone, and RL and evaluation
  ask for the same (state, action) pairs again (an anchor's first edit, policies that agree):
  the last `memo_size` answers are remembered by prompt, and a batch's repeated prompts are
  generated once.
  """

  def __init__(self, sampler, *, prompt_template: str = DEFAULT_PROMPT_TEMPLATE,
               max_new_tokens: int, strategy, few_shot: bool = False,
               context_template: str = CONTEXT_TEMPLATE,
               examples: Sequence[tuple[str, str, str]] = MOVIE_EXAMPLES, max_chars: int = 800,
               keep_fields: bool = False, memo_size: int = 100_000):
    for field in ("{entity}", "{action}"):
      if field not in prompt_template:
        raise EagleError(f"prompt template must contain {field} (fields: {{entity}}, "
                         f"{{action}}, {{context}}); got {prompt_template!r}")
    if "{profile}" not in context_template:
      raise EagleError(f"context template must contain {{profile}}; got {context_template!r}")
    self.sampler = sampler
    self.prompt_template = prompt_template
    self.context_template = context_template
    self.max_new_tokens = max_new_tokens
    self.strategy = strategy
    self.few_shot = few_shot
    self.examples = tuple(examples)
    self.max_chars = max_chars
    self.keep_fields = keep_fields
    # A base model that starts a new example has finished its answer.
    lead = prompt_template.split("{")[0].strip()
    self.stop = ("\n\n",) + ((f"\n{lead}",) if lead else ()) if few_shot else ()
    self.markers = instruction_markers(prompt_template, context_template)
    self.memo_size = memo_size if isinstance(strategy, sampler_lib.Greedy) else 0
    self._memo: collections.OrderedDict[str, tuple[str, bool]] = collections.OrderedDict()

  def _instruction(self, entity: str, action: str, profile: str | None) -> str:
    context = self.context_template.format(profile=profile.strip()) if profile else ""
    return self.prompt_template.format(entity=entity.strip(), context=context,
                                       action=action.strip().rstrip(".!;"))

  def prompts(self, entities: Sequence[str], actions: Sequence[str],
              context: Sequence[str] | None = None) -> list[str]:
    """The prompt text for each triple (before the chat template)."""
    if len(entities) != len(actions) or (context is not None and len(context) != len(entities)):
      raise EagleError(f"rewrite needs as many actions and contexts as entities; got "
                       f"{len(entities)} entities, {len(actions)} actions, "
                       f"{'no' if context is None else len(context)} contexts")
    profiles = context if context is not None else [None] * len(entities)
    queries = [self._instruction(e, a, p) for e, a, p in zip(entities, actions, profiles)]
    if not self.few_shot:
      return queries
    shots = [(self._instruction(e, a, None), r) for e, a, r in self.examples]
    return [prompting.few_shot_prompt(shots, q, answer_prefix=ANSWER_PREFIX) for q in queries]

  def rewrite(self, entities: Sequence[str], actions: Sequence[str],
              context: Sequence[str] | None = None, seed: int = 0) -> RewriteResult:
    """Rewrites each entity following its action; degenerate outputs keep the entity."""
    answers, finished, tokens, remembered = self._answers(
        self.prompts(entities, actions, context), seed)
    texts, reasons = [], []
    for raw, finished, entity in zip(answers, finished, entities):
      fields, plot = descriptions.split_plot(entity) if self.keep_fields else ("", entity)
      text, reason = clean_output(raw, plot, self.max_chars, finished=finished,
                                  markers=self.markers)
      if self.keep_fields and reason is None:
        reason = "format" if descriptions.breaks_format(text) else None
        text = descriptions.with_plot(fields, text)
      texts.append(entity if reason else text)
      reasons.append(reason)
    return RewriteResult(texts=texts, degenerate=reasons, raw=answers, tokens=tokens,
                         remembered=remembered)

  def _answers(self, prompts: list[str], seed: int) -> tuple[list[str], list[bool], int, int]:
    """(raw answers, finished flags, tokens generated, answers remembered) for `prompts`."""
    sample = functools.partial(self.sampler.sample, max_new_tokens=self.max_new_tokens,
                               strategy=self.strategy, seed=seed, stop=self.stop,
                               apply_template=not self.few_shot)
    if not self.memo_size:
      out = sample(prompts)
      return list(out.texts), list(out.finished), out.tokens, 0
    new = list(dict.fromkeys(p for p in prompts if p not in self._memo))
    known = {p: self._memo[p] for p in prompts if p in self._memo}
    tokens = 0
    if new:
      out = sample(new)
      known.update(zip(new, zip(out.texts, out.finished)))
      tokens = out.tokens
    for prompt in prompts:  # Most recently asked last: the oldest are forgotten first.
      self._memo[prompt] = known[prompt]
      self._memo.move_to_end(prompt)
    while len(self._memo) > self.memo_size:
      self._memo.popitem(last=False)
    return ([known[p][0] for p in prompts], [known[p][1] for p in prompts], tokens,
            len(prompts) - len(new))

  def transition(self, entities: Sequence[str], actions: Sequence[str],
                 context: Sequence[str] | None = None, *, seed: int, emb, action_emb,
                 embed) -> tuple[RewriteResult, object]:
    """One EAGLE step: rewrite, then `embed` the new texts (the interface the episode runner
    calls; the synthetic environment moves `emb` by `action_emb` instead of writing text)."""
    del emb, action_emb  # The LLM reads text only.
    result = self.rewrite(entities, actions, context, seed=seed)
    return result, embed(result.texts)
