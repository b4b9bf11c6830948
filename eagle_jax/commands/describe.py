"""`describe`: an LLM writes every modelled movie's plot after its MovieLens fields.

  python -m eagle_jax describe --config experiments/demo.py
  python -m eagle_jax describe --config experiments/demo.py --regenerate

Writes `<workdir>/descriptions.csv` (read by `prepare` when config.data.descriptions is
'described') and `descriptions.json` (fingerprint, model, degenerate answers, tokens, time).
Interrupted runs resume; a finished one is reused while its fingerprint matches.
"""

from __future__ import annotations

import argparse

from eagle_jax.commands.common import add_run_args, config_from_args, process_zero_stage


def add_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--regenerate", action="store_true",
                      help="generate with the LLM even when the package ships the descriptions "
                           "of this exact config (proves they are reproduced)")
  parser.add_argument("--ship", action="store_true",
                      help="maintainers: copy the result into eagle_jax/world/embedded as the "
                           "shipped descriptions of this config")
  add_run_args(parser)


@process_zero_stage
def run(args) -> int:
  from eagle_jax.run import folder as run_folder
  from eagle_jax.world import describe
  from eagle_jax.environment.build import make_sampler
  from eagle_jax.world.movielens import load_catalogue
  from eagle_jax.llm import sampler as sampler_lib
  config = config_from_args(args)
  c = config.describe
  catalogue = load_catalogue(config.data.source)
  fields = describe.movie_fields(catalogue, config.data.min_ratings_per_movie,
                                 config.data.num_tags)
  print(f"describe: {len(fields)} movies of {catalogue.name} with >= "
        f"{config.data.min_ratings_per_movie} ratings, by {c.model} (greedy)", flush=True)
  sampler = None

  def generate(prompts):
    nonlocal sampler
    if sampler is None:  # Loaded only when something is left to generate.
      sampler = make_sampler(config, c.batch_size, model=c.model)
    out = sampler.sample(prompts, max_new_tokens=c.max_new_tokens, strategy=sampler_lib.Greedy())
    return describe.Generated(texts=out.texts, finished=out.finished, tokens=out.tokens)

  meta = describe.describe(config, fields, generate, config.workdir, regenerate=args.regenerate)
  line = (f"{meta['movies']} descriptions ({meta['source']}) in "
          f"{run_folder.RunFolder(config) / run_folder.DESCRIPTIONS_CSV}")
  if "degenerate" in meta:
    line += (f"; {meta['degenerate']} answers degenerate (fields only) "
             f"{meta['degenerate_by_reason']}; {meta['tokens']:.0f} tokens, {meta['seconds']} s")
  print(line)
  if args.ship:
    print(f"shipped as {describe.ship(config.workdir, meta['fingerprint'])}")
  return 0
