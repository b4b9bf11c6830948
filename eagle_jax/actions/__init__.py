"""Candidate actions A(x, u) (stage 3): the edit prompts the policy chooses from (paper
§4.3, §5.1), and `anchors`, the table of (movie, user) episodes with their embedded sets.

`vocabulary` holds what an action is made of (kinds, categories, word limits, verbs, slot
words and templates); `library` fills the templates from the movie and the user profile;
`llm_source` writes the LLM's request for a list of actions and reads its answer;
`candidate_set` assembles balanced generic and personalised sets from either source; and
`cache` stores one set per (movie, user) so a long run resumes where it stopped.
"""

from eagle_jax.actions.cache import ActionCache, fill_action_cache
from eagle_jax.actions.candidate_set import candidate_actions

__all__ = ["ActionCache", "candidate_actions", "fill_action_cache"]
