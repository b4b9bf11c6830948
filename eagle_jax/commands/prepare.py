"""`prepare`: MovieLens -> ALS latent space -> text encoder E_D, each stage cached in the run dir.

Artefacts (all written atomically; a stage whose manifest's fingerprint matches the config
and the upstream artefacts is reused, `eagle_jax/run/folder.py`):
  latent.npz / latent.json      user and item factors, held-out RMSE and recall@k vs popularity
  text.npz / text.json          MiniLM embeddings of the item descriptions (fields and plot
                                apart when config.encoder.plot_weight > 0)
  ed_head.npz / ed_head.json    regression head text embedding -> item latent; held-out R^2,
                                cosine, user rank corr
"""

from __future__ import annotations

import argparse

from eagle_jax.commands.common import add_run_args, config_from_args, process_zero_stage


def add_args(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--data", help="MovieLens source: 'embedded', a GroupLens directory "
                      "(ml-latest/ml-25m/ml-100k format) or tfds:movielens/<config> "
                      "(overrides config.data.source)")
  parser.add_argument("--descriptions", help="item text: 'described' (the output of `describe` "
                      "in the run dir), 'movielens' (the fields alone) or a CSV with columns "
                      "movieId,description (overrides config.data.descriptions)")
  add_run_args(parser)


DATA_FLAGS = (("data", "data.source"), ("descriptions", "data.descriptions"))


@process_zero_stage
def run(args) -> int:
  from eagle_jax.world import prepared
  config = config_from_args(args, DATA_FLAGS)
  bundle = prepared.prepare(config, verbose=True)
  print(prepared.summary(bundle))
  return 0
