"""The environment a config names, built: the LLM behind a sharded sampler (for rewrites and
for writing actions), or the synthetic one."""

from __future__ import annotations

from eagle_jax.errors import EagleError


def build_environment(config, world=None, table=None):
  """The environment of config.env.kind: the LLM (model, sharded sampler, rewrite prompt), or
  the synthetic one, calibrated on the table's anchors (so it needs `world` and `table`;
  its `stats` say how it was calibrated)."""
  from eagle_jax.environment import rewrite as env
  from eagle_jax.world import descriptions
  if config.env.kind == "synthetic":
    from eagle_jax.environment.synthetic import SyntheticEnvironment
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
  """An LLM (config.llm's unless `model` names another) behind a sampler sharded over this
  host's devices as config.mesh says (rows over `data`, weights over `model`)."""
  from eagle_jax import distributed
  from eagle_jax.llm import sampler as sampler_lib
  from eagle_jax.llm.weights import load_model
  c = config.llm
  return sampler_lib.Sampler(load_model(model or c.model, dtype=c.dtype), batch_size=batch_size,
                             buckets=tuple(c.prompt_buckets),
                             mesh=distributed.mesh_from_config(config, local=True),
                             native_kernels=c.get("native_kernels", True))


def generate_fn(environment, config):
  """Plain prompt -> text with the environment's sampler (action lists, profile summaries)."""
  def fn(prompts):
    return environment.sampler.sample(prompts, max_new_tokens=config.llm.max_new_tokens * 2,
                                      strategy=environment.strategy, seed=config.seed).texts
  return fn


def action_generator(environment, config):
  """The LLM that writes candidate actions when config.actions.source uses one, else None."""
  return generate_fn(environment, config) if config.actions.source != "library" else None
