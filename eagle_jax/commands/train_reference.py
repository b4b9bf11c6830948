"""`train-reference`: SFT of the reference scorer on uniform | optimistic | G-optimal targets.

Writes <workdir>/reference/<kind>/ (Orbax) and reference_<kind>.json, replaced together when
the config changes; reused while their fingerprint matches it.
"""

from __future__ import annotations

import argparse

from eagle_jax.commands import common


def add_args(parser: argparse.ArgumentParser) -> None:
  common.add_run_args(parser)
  parser.add_argument("--kind", choices=("uniform", "optimistic", "goptimal"),
                      help="reference distribution (overrides config.reference.kind)")


@common.process_zero_stage
def run(args) -> int:
  import numpy as np

  from eagle_jax.loop import stages
  from eagle_jax.run import folder as run_folder
  from eagle_jax.world import prepared
  config = common.config_from_args(args, (("kind", "reference.kind"),))
  world = prepared.load(config)
  table = stages.load_anchors(config)
  _, metrics = stages.reference(config, world, table)
  print(f"reference policy ({config.reference.kind}) -> "
        f"{run_folder.RunFolder(config).reference_dir()}")
  for k, v in sorted(metrics.items()):
    if isinstance(v, (int, float)):
      print(f"  {k}: {v:.3f}")
  print(f"  (entropy of a uniform pick: {metrics['uniform_entropy']:.3f}; the design's "
        f"subsets of {config.design.subset_size}: {np.log(config.design.subset_size):.3f})")
  return 0
