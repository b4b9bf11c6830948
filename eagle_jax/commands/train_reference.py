"""`train-reference`: SFT of the reference scorer on uniform | optimistic | G-optimal targets."""

from __future__ import annotations

import argparse
import json

from eagle_jax.commands import common


def add_args(parser: argparse.ArgumentParser) -> None:
  common.add_run_args(parser)
  parser.add_argument("--kind", choices=("uniform", "optimistic", "goptimal"),
                      help="reference distribution (overrides config.reference.kind)")


def run(args) -> int:
  import jax

  from eagle_jax import (artifacts, candidates, checkpoint, distributed, features, prepared,
                         reference, train)
  config = common.config_from_args(args, (("kind", "reference.kind"),))
  workdir = common.workdir(config)
  world = prepared.load(config)
  table = candidates.CandidateTable.load(workdir / "candidates.npz")
  design = artifacts.read_npz(workdir / "design.npz")
  rows = design["anchors"]  # The anchors the design covered, train and held-out.
  q = reference.targets(config.reference.kind, table.mask[rows], design["next_utility"],
                        design["subsets"])
  states, users, cands = features.initial_features(world, table)

  def batch(heldout):
    keep = table.heldout[rows] == heldout
    if not keep.any():
      return None
    r = rows[keep]
    return reference.sft_batch(states[r], users[r], cands[r], table.mask[r], q[keep],
                               config.rl.horizon)

  scorer, _ = train.networks(config, config.rl.horizon)
  params, metrics = reference.train_reference(
      scorer, batch(heldout=False), batch(heldout=True),
      lr=config.reference.lr, steps=config.reference.steps, mesh=distributed.make_mesh(),
      seed=config.seed)
  directory = workdir / "reference" / config.reference.kind
  with checkpoint.Checkpointer(directory, max_to_keep=1) as ckpt:
    ckpt.save(config.reference.steps, params=params, opt_state={}, rng=jax.random.key(0),
              config_json=json.loads(config.to_json()))
  artifacts.write_json(workdir / f"reference_{config.reference.kind}.json", metrics)
  print(f"reference policy ({config.reference.kind}) -> {directory}")
  for k, v in sorted(metrics.items()):
    print(f"  {k}: {v:.3f}")
  return 0
