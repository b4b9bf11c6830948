"""A run's live objects, built from its config: the environment (the LLM behind a sharded
sampler, or the synthetic one), text generation for actions, and the episode runner."""

from __future__ import annotations

from eagle_jax.errors import EagleError


def build_environment(config, world=None, table=None):
  """The environment of config.env.kind: the LLM (model, sharded sampler, rewrite prompt), or
  the synthetic one, calibrated on the table's anchors (so it needs `world` and `table`;
  its `stats` say how it was calibrated)."""
  from eagle_jax import env
  from eagle_jax.data import descriptions
  if config.env.kind == "synthetic":
    from eagle_jax.synthetic_env import SyntheticEnvironment
    if world is None or table is None:
      raise EagleError("config.env.kind='synthetic' edits embeddings, not text: this command "
                       "needs the LLM environment (config.env.kind='llm')")
    return SyntheticEnvironment.calibrated(world, table, config.env.synthetic_rho,
                                           seed=config.seed)
  if config.env.kind != "llm":
    raise EagleError(f"config.env.kind={config.env.kind!r}: expected 'llm' or 'synthetic'")
  from eagle_jax.llm import sampler as sampler_lib
  c = config.llm
  sampler = make_sampler(config, c.batch_size)
  return env.EnvironmentLLM(
      sampler, prompt_template=config.env.prompt_template,
      context_template=config.env.context_template, max_new_tokens=c.max_new_tokens,
      strategy=sampler_lib.make_strategy(c.temperature, c.top_k, c.top_p),
      few_shot=sampler.model.chat_template is None,
      keep_fields=config.data.descriptions == descriptions.DESCRIBED)


def make_sampler(config, batch_size: int, model: str | None = None):
  """An LLM (config.llm's unless `model` names another) behind a sampler sharded over the
  local devices."""
  from eagle_jax import distributed
  from eagle_jax.llm import sampler as sampler_lib
  from eagle_jax.llm.weights import load_model
  c = config.llm
  return sampler_lib.Sampler(load_model(model or c.model, dtype=c.dtype), batch_size=batch_size,
                             buckets=tuple(c.prompt_buckets), mesh=distributed.make_mesh())


def make_runner(config, world, table, environment=None):
  """An episode runner in the config's environment; later states reuse their anchor's
  candidates or get fresh ones (config.rl.candidates)."""
  from eagle_jax import anchors, rollout
  environment = environment or build_environment(config, world, table)
  mode = config.rl.candidates
  if mode not in ("reuse", "regenerate"):
    raise EagleError(f"config.rl.candidates={mode!r}: expected 'reuse' or 'regenerate'")
  regenerate = None
  if mode == "regenerate":
    regenerate = anchors.Regenerator(world, config, action_generator(environment, config))
  return rollout.EpisodeRunner(world, table, environment, horizon=config.rl.horizon,
                               personalise=config.env.personalise, regenerate=regenerate)


def generate_fn(environment, config):
  """Plain prompt -> text with the environment's sampler (action lists, profile summaries)."""
  def fn(prompts):
    return environment.sampler.sample(prompts, max_new_tokens=config.llm.max_new_tokens * 2,
                                      strategy=environment.strategy, seed=config.seed).texts
  return fn


def action_generator(environment, config):
  """The LLM that writes candidate actions when config.actions.source uses one, else None."""
  return generate_fn(environment, config) if config.actions.source != "library" else None
