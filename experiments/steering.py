"""Does the trained policy beat random on unseen movies? The demo's loop with enough held-out
anchors to see it: 96 (the demo's 24 detect only effects >= 0.031 at 80 % power; its measured
EAGLE - random, +0.018 with sd 0.055, needs ~77).

2 CPU cores, 52 min measured: EAGLE - random +0.017 +- 0.010 (README, "EAGLE against random
on unseen movies"; record in experiments/results/steering_cpu.json):

  for s in describe prepare actions design train-reference train; do
    python -m eagle_jax $s --config experiments/steering.py || break; done

`experiments/steering.py:gpu` is the same question at accelerator scale (256 held-out
anchors, 3x the updates of 4x the episodes), same commands with `:gpu`: 3-5 min on one H100,
EAGLE - random +0.011 to +0.018 over 3 seeds (experiments/results/steering_gpu_h100.json).
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import demo  # noqa: E402


def get_config(arg: str = ""):
  c = demo.get_config()  # Same catalogue text, E_D, environment LLM, prompt and learner.
  c.workdir = "runs/steering"
  c.actions.num_anchors = 224
  c.actions.heldout_fraction = 3 / 7  # 96 held out; 128 to train on.
  c.rl.iterations = 20
  c.eval.best_of_n = 1  # Not needed for the question; 192 rewrites saved.
  if arg == "gpu":
    c.workdir = "runs/steering-gpu"
    c.actions.num_anchors = 512
    c.actions.heldout_fraction = 0.5
    c.design.num_anchors = 64
    c.llm.batch_size = 64  # Divides every batch of prompts below: no padded rows.
    c.rl.batch_size = 64
    c.rl.iterations = 64
    c.checkpoint.every = 16
    c.eval.best_of_n = 2
  elif arg:
    raise ValueError(f"unknown variant {arg!r} of steering.py (known: gpu)")
  return c
