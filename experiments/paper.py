"""The paper's setting (arXiv 2406.00024 §5): MovieLens 25M, 50 + 50 actions, H = 5.

Sized for an accelerator pod (`make tpu-train CONFIG=experiments/paper.py`), not a laptop:

  python -m eagle_jax prepare --config experiments/paper.py --data /data/ml-25m
  python -m eagle_jax train --config experiments/paper.py

Values the paper leaves open (its Tables 6-7 are images; see ../shared/reference/paper.md)
are marked "not in the paper".
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import demo  # noqa: E402


def get_config(arg: str = ""):
  c = demo.get_config()
  c.workdir = "runs/paper"
  c.data.source = "tfds:movielens/25m-ratings"  # Or a GroupLens ml-25m directory.
  c.als.dim = 16  # Not in the paper.
  c.als.reg = 10.0
  c.llm.max_new_tokens = 128
  c.llm.batch_size = 256  # 16 environment LLMs queried in parallel in the paper.
  c.llm.dtype = "bfloat16"
  c.env.personalise = True
  c.actions.num_anchors = 2000  # Not in the paper.
  c.actions.num_generic = 50
  c.actions.num_personalised = 50
  c.design.num_anchors = 0  # Every anchor (paper: all movies).
  c.design.subset_size = 16  # Paper: 10 with its own latent dim; keep >= als.dim.
  c.design.method = "frank_wolfe"
  c.reference.steps = 5000
  c.rl.horizon = 5
  c.rl.iterations = 5000
  c.rl.batch_size = 256
  c.checkpoint.every = 100
  c.eval.episodes_per_pair = 4
  c.eval.best_of_n = 8
  c.eval.greedy_baseline = True
  if arg:
    raise ValueError(f"unknown variant {arg!r} of paper.py (none defined)")
  return c
