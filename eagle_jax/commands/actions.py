"""`actions`: anchors (movie, user), user profiles and candidate edit actions, embedded.

Candidate sets are cached one file per pair under <workdir>/actions/, so an interrupted run
continues where it stopped; the table of embedded candidates is <workdir>/anchors.npz,
reused while its fingerprint matches the config.
"""

from __future__ import annotations

import argparse

from eagle_jax.commands import common


def add_args(parser: argparse.ArgumentParser) -> None:
  common.add_run_args(parser)


@common.process_zero_stage
def run(args) -> int:
  from eagle_jax.loop import stages
  from eagle_jax.run import folder as run_folder
  from eagle_jax.world import prepared
  config = common.config_from_args(args)
  world = prepared.load(config)
  table = stages.actions(config, world)
  sizes = table.mask.sum(1)
  print(f"{table.num_anchors} anchors ({int(table.heldout.sum())} held out, unseen movies), "
        f"{sizes.min()}-{sizes.max()} candidate actions each -> "
        f"{run_folder.RunFolder(config).data('anchors')}")
  a = 0
  print(f"example: {world.title(table.items[a])} for user {table.user_ids[a]}:")
  for action in table.actions[a][:3] + table.actions[a][-3:]:
    print(f"  - {action}")
  return 0
