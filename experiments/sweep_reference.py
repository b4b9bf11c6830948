"""Sweep of the reference-policy SFT and the RL KL weight over the demo setting.

  python -m eagle_jax sweep --config experiments/sweep_reference.py --dry-run
  python -m eagle_jax sweep --config experiments/sweep_reference.py

Each grid point is a run directory under runs/sweep/ (e.g. runs/sweep/kind=goptimal,kl_coef=0.05).
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import demo  # noqa: E402


def get_config(arg: str = ""):
  return demo.get_config(arg)


def get_sweep():
  return {
      "reference.kind": ["uniform", "optimistic", "goptimal"],
      "rl.kl_coef": [0.0, 0.05, 0.2],
  }
