"""The environment (stage 2): the frozen LLM rewrites a description following an action
(`rewrite`), or a synthetic stand-in moves its embedding (`synthetic`); `features` is what
the agent observes of a state and its candidates; `build` makes the one a config names."""
