"""`actions`: anchors (movie, user), user profiles and candidate edit actions, embedded.

Candidate sets are cached one file per pair under <workdir>/actions/, so an interrupted run
continues where it stopped; the table of embedded candidates is <workdir>/candidates.npz.
"""

from __future__ import annotations

import argparse

from eagle_jax.commands import common


def add_args(parser: argparse.ArgumentParser) -> None:
  common.add_run_args(parser)


def run(args) -> int:
  from eagle_jax import candidates, prepared
  config = common.config_from_args(args)
  world = prepared.load(config)
  generate = None
  if config.actions.source != "library":
    generate = common.generate_fn(common.build_environment(config), config)
  table = candidates.build_table(world, config, generate_fn=generate)
  table.save(common.workdir(config) / "candidates.npz")
  sizes = table.mask.sum(1)
  print(f"{table.num_anchors} anchors ({int(table.heldout.sum())} held out, unseen movies), "
        f"{sizes.min()}-{sizes.max()} candidate actions each -> "
        f"{common.workdir(config) / 'candidates.npz'}")
  a = 0
  print(f"example: {world.title(table.items[a])} for user {table.user_ids[a]}:")
  for action in table.actions[a][:3] + table.actions[a][-3:]:
    print(f"  - {action}")
  return 0
