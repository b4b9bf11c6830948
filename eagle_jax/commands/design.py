"""`design`: roll every candidate once through the environment, then the G-optimal design.

One-step rollouts are cached per anchor under <workdir>/one_step/ (interrupt and re-run to
continue). The design over each anchor's next-state latents picks config.design.subset_size
candidates; its coverage is compared with random subsets of the same size.
"""

from __future__ import annotations

import argparse

import numpy as np
import tqdm

from eagle_jax.commands import common


def add_args(parser: argparse.ArgumentParser) -> None:
  common.add_run_args(parser)


def one_step_rollouts(runner, config, anchors_per_call: int):
  """z_next [A, K, d], next utility [A, K]; cached per anchor so a run can resume."""
  from eagle_jax import artifacts
  table = runner.table
  folder = common.workdir(config) / "one_step"
  paths = [folder / f"{i}_{int(table.user_ids[i])}.npz" for i in range(table.num_anchors)]
  todo = [i for i, p in enumerate(paths) if not p.is_file()]
  for start in tqdm.trange(0, len(todo), anchors_per_call, desc="one-step rollouts",
                           unit="chunk"):
    chunk = np.array(todo[start:start + anchors_per_call])
    z, u, texts = runner.one_step_all(chunk, seed=config.seed)
    for j, a in enumerate(chunk):
      artifacts.write_npz(paths[a], z=z[j], utility=u[j], texts=np.array(texts[j], np.str_))
  loaded = [artifacts.read_npz(p) for p in paths]
  return np.stack([x["z"] for x in loaded]), np.stack([x["utility"] for x in loaded])


def run(args) -> int:
  from eagle_jax import artifacts, reference
  config = common.config_from_args(args)
  workdir = common.workdir(config)
  _, table, runner = common.load_runner(config)
  K = table.mask.shape[1]
  z_next, next_utility = one_step_rollouts(
      runner, config, anchors_per_call=max(1, 4 * config.llm.batch_size // K))
  subsets, stats = reference.design_subsets(z_next, table.mask, config.design, config.seed)
  coverage = {
      "goptimal": reference.subset_coverage(z_next, table.mask, subsets),
      "random": reference.subset_coverage(
          z_next, table.mask,
          reference.random_subsets(table.mask, config.design.subset_size, config.seed)),
  }
  summary = {"coverage": coverage, "method": config.design.method,
             **{k: v.tolist() for k, v in stats.items()}}
  artifacts.write_npz(workdir / "design.npz", subsets=subsets, z_next=z_next,
                      next_utility=next_utility)
  artifacts.write_json(workdir / "design.json", summary)
  g, r = coverage["goptimal"], coverage["random"]
  print(f"G-optimal design ({config.design.method}) over {K} candidates x {table.num_anchors} "
        f"anchors, subsets of {config.design.subset_size}:")
  if "converged" in stats:
    print(f"  converged {int(stats['converged'].sum())}/{len(subsets)}, achieved eps "
          f"median {np.median(stats['achieved_eps']):.4f}, span rank "
          f"{int(np.median(stats['rank']))}")
  print("  coverage of all candidates   log det   max leverage (median)")
  print(f"  G-optimal subset          {g['log_det']:9.3f}   {g['max_leverage']:9.2f}")
  print(f"  random subset             {r['log_det']:9.3f}   {r['max_leverage']:9.2f}")
  return 0
