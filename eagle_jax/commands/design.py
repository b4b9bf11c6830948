"""`design`: roll every candidate once through the environment, then the G-optimal design.

One-step rollouts are cached per anchor under <workdir>/one_step/, keyed on what they depend
on (`eagle_jax.design.one_step`): interrupt and re-run to continue; a changed config, anchor or
prepared world re-runs the anchors it affects. The design over each anchor's next-state
latents picks config.design.subset_size candidates; its coverage is compared with random
subsets of the same size. Only config.design.num_anchors anchors get it (0: all): they are
what the reference trains on. <workdir>/design.{npz,json} are reused while their
fingerprint matches the config.
"""

from __future__ import annotations

import argparse

from eagle_jax.commands import common


def add_args(parser: argparse.ArgumentParser) -> None:
  common.add_run_args(parser)


@common.process_zero_stage
def run(args) -> int:
  import numpy as np

  from eagle_jax.loop import stages
  from eagle_jax.run import folder as run_folder
  from eagle_jax.world import prepared
  config = common.config_from_args(args)
  world = prepared.load(config)
  table = stages.load_anchors(config)
  d = stages.design(config, world, table)
  s = d.summary
  steer, K = s["steerability"], s["candidates"]
  cache = s["one_step"]
  print(f"one-step rollouts of {s['anchors']} anchors: {cache['reused']} reused from "
        f"{run_folder.RunFolder(config) / run_folder.ONE_STEP}, {cache['rerun']} re-run")
  g, r = s["coverage"]["goptimal"], s["coverage"]["random"]
  print(f"G-optimal design ({s['method']}) over {K} candidates x {s['anchors']} "
        f"of {s['table_anchors']} anchors, subsets of {config.design.subset_size}:")
  if "converged" in s:
    print(f"  converged {int(np.sum(s['converged']))}/{s['anchors']}, achieved eps "
          f"median {np.median(s['achieved_eps']):.4f}, span rank "
          f"{int(np.median(s['rank']))}")
  print("  coverage of all candidates   log det   max leverage (median)")
  print(f"  G-optimal subset          {g['log_det']:9.3f}   {g['max_leverage']:9.2f}")
  print(f"  random subset             {r['log_det']:9.3f}   {r['max_leverage']:9.2f}")
  if "env_tokens_per_s" in steer:
    print(f"environment: {steer['env_tokens']} tokens generated in {steer['env_seconds']:.0f} s "
          f"({steer['env_tokens_per_s']:.0f} tokens/s, rewrites and E_D together)")
  print(f"{steer['usable_rewrites']:.0%} of the one-step rewrites were usable (the rest were "
        "rejected as degenerate and kept x_0)")
  print(f"the rewrite's nearest action text is the one applied in "
        f"{steer['identification']:.0%} of rewrites (chance {steer['chance']:.0%})")
  if steer.get("paraphrases_usable") == 0:
    print(f"E_D stability: not measured, none of the {s['anchors']} paraphrases was usable")
  elif "paraphrase_move" in steer:
    print(f"E_D stability: a paraphrase moves z by {steer['paraphrase_move']:.3f} (median of "
          f"{steer['paraphrases_usable']} usable of {s['anchors']}), a real edit by "
          f"{steer['edit_move']:.3f} ({steer['edits_usable']} usable; ratio "
          f"{steer['paraphrase_edit_ratio']:.2f})")
  print(f"one-step utility over a random pick: best candidate {_f(steer['oracle_gain'])}, "
        f"best by E_D's reading of the edit {_f(steer['predicted_gain'])} "
        f"(within-anchor correlation {_f(steer['correlation'], '.2f')}), best by a ridge fit "
        f"of all candidate features on other movies {_f(steer['fitted_gain'])} (correlation "
        f"{_f(steer['fitted_correlation'], '.2f')})")
  return 0


def _f(value, spec: str = "+.3f") -> str:
  """A statistic, or n/a where it is undefined (NaN, stored as null)."""
  return "n/a" if value is None or value != value else format(value, spec)
