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
  import numpy as np

  from eagle_jax import artifacts, candidates, checkpoint, distributed, prepared, reference, train
  config = common.config_from_args(args, (("kind", "reference.kind"),))
  workdir = common.workdir(config)
  world = prepared.load(config)
  table = candidates.CandidateTable.load(workdir / "candidates.npz")
  c = config.reference
  train_batch, heldout_batch = reference.design_batches(
      world, table, artifacts.read_npz(workdir / "design.npz"), c.kind, config.rl.horizon,
      c.label_smoothing)
  scorer, _ = train.networks(config, config.rl.horizon)
  params, metrics = reference.train_reference(
      scorer, train_batch, heldout_batch, lr=c.lr, steps=c.steps, mesh=distributed.make_mesh(),
      seed=config.seed, weight_decay=c.weight_decay)
  metrics.update(reference.policy_entropy(world, table, scorer, params))
  directory = workdir / "reference" / config.reference.kind
  with checkpoint.Checkpointer(directory, max_to_keep=1) as ckpt:
    ckpt.save(c.steps, params=params, opt_state={}, rng=jax.random.key(0),
              config_json=json.loads(config.to_json()))
  artifacts.write_json(workdir / f"reference_{config.reference.kind}.json", metrics)
  print(f"reference policy ({config.reference.kind}) -> {directory}")
  for k, v in sorted(metrics.items()):
    print(f"  {k}: {v:.3f}")
  print(f"  (entropy of a uniform pick: {metrics['uniform_entropy']:.3f}; the design's "
        f"subsets of {config.design.subset_size}: {np.log(config.design.subset_size):.3f})")
  return 0
