"""`design`: roll every candidate once through the environment, then the G-optimal design.

One-step rollouts are cached per anchor under <workdir>/one_step/, keyed on what they depend
on (`eagle_jax.one_step`): interrupt and re-run to continue; a changed config, anchor or
prepared world re-runs the anchors it affects. The design over each anchor's next-state
latents picks config.design.subset_size candidates; its coverage is compared with random
subsets of the same size. Only config.design.num_anchors anchors get it (0: all): they are
what the reference trains on.
"""

from __future__ import annotations

import argparse

import numpy as np

from eagle_jax.commands import common


def add_args(parser: argparse.ArgumentParser) -> None:
  common.add_run_args(parser)


def run(args) -> int:
  from eagle_jax import artifacts, features, one_step, reference
  from eagle_jax.data import descriptions
  config = common.config_from_args(args)
  workdir = common.workdir(config)
  world, table, runner = common.load_runner(config)
  K = table.mask.shape[1]
  rows = table.design_rows(config.design.num_anchors)
  mask = table.mask[rows]
  steps = one_step.one_step_rollouts(
      runner, config, rows, anchors_per_call=max(1, 4 * config.llm.batch_size // K))
  print(f"one-step rollouts of {len(rows)} anchors: {steps.reused} reused from "
        f"{workdir / 'one_step'}, {steps.rerun} re-run")
  z_next, next_utility, rewrites = steps.z, steps.utility, steps.texts
  subsets, stats = reference.design_subsets(z_next, mask, config.design, config.seed)
  coverage = {
      "goptimal": reference.subset_coverage(z_next, mask, subsets),
      "random": reference.subset_coverage(
          z_next, mask, reference.random_subsets(mask, config.design.subset_size, config.seed)),
  }
  # Does the environment follow the edits, does the action matter one step ahead, and does
  # E_D's reading of the edit predict it?
  candidates = features.initial_features(world, table)[2][rows]
  steer = features.steerability(candidates[..., -1], next_utility, mask)
  steer.update(features.fitted_predictor_gain(candidates, next_utility, mask, table.items[rows]))
  # The plot alone: a described rewrite keeps its anchor's fields, which would pull the
  # nearest action toward the anchor's genres rather than the edit.
  rewrite_emb = world.embed_text([descriptions.split_plot(t)[1] or t for row in rewrites
                                  for t in row]).reshape(len(rows), K, -1)
  steer.update(features.action_identification(rewrite_emb, table.action_emb[rows], mask))
  anchor_texts = [world.text(table.items[a]) for a in rows]
  edited = mask & np.array([[t != x0 for t in row] for row, x0 in zip(rewrites, anchor_texts)])
  steer["usable_rewrites"] = float(edited.sum() / mask.sum())
  if steps.rerun:  # Rewrites made now (a reused cache says nothing about speed).
    steer.update(env_tokens=runner.env_tokens, env_seconds=runner.env_seconds,
                 env_tokens_per_s=runner.env_tokens / max(runner.env_seconds, 1e-9))
  if config.env.kind == "llm":
    steer.update(_paraphrase_stability(runner, rows, anchor_texts, z_next, edited,
                                       config.seed))
  summary = {"coverage": coverage, "steerability": steer, "method": config.design.method,
             "one_step": {"fingerprints": steps.fingerprints, "reused": steps.reused,
                          "rerun": steps.rerun},
             **{k: v.tolist() for k, v in stats.items()}}
  artifacts.write_npz(workdir / "design.npz", anchors=rows, subsets=subsets, z_next=z_next,
                      next_utility=next_utility)
  artifacts.write_json(workdir / "design.json", summary)
  g, r = coverage["goptimal"], coverage["random"]
  print(f"G-optimal design ({config.design.method}) over {K} candidates x {len(rows)} "
        f"of {table.num_anchors} anchors, subsets of {config.design.subset_size}:")
  if "converged" in stats:
    print(f"  converged {int(stats['converged'].sum())}/{len(subsets)}, achieved eps "
          f"median {np.median(stats['achieved_eps']):.4f}, span rank "
          f"{int(np.median(stats['rank']))}")
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
    print(f"E_D stability: not measured, none of the {len(rows)} paraphrases was usable")
  elif "paraphrase_move" in steer:
    print(f"E_D stability: a paraphrase moves z by {steer['paraphrase_move']:.3f} (median of "
          f"{steer['paraphrases_usable']} usable of {len(rows)}), a real edit by "
          f"{steer['edit_move']:.3f} ({steer['edits_usable']} usable; ratio "
          f"{steer['paraphrase_edit_ratio']:.2f})")
  print(f"one-step utility over a random pick: best candidate +{steer['oracle_gain']:.3f}, "
        f"best by E_D's reading of the edit {steer['predicted_gain']:+.3f} "
        f"(within-anchor correlation {steer['correlation']:.2f}), best by a ridge fit of all "
        f"candidate features on other movies {steer['fitted_gain']:+.3f} (correlation "
        f"{steer['fitted_correlation']:.2f})")
  return 0


def _paraphrase_stability(runner, rows, texts, z_next, edited, seed) -> dict:
  """Each design anchor (text `texts`) rewritten by `features.PARAPHRASE`: E_D's move
  against an edit's."""
  from eagle_jax import features
  world, table = runner.prepared, runner.table
  emb0 = world.text_emb[table.items[rows]]
  action_emb = np.repeat(world.embed_text([features.PARAPHRASE]), len(rows), axis=0)
  result, emb, _ = runner.step(texts, [features.PARAPHRASE] * len(rows), rows, seed, emb0,
                               action_emb)
  _, z0 = runner.state_features(emb0)
  _, z_para = runner.state_features(emb)
  usable = np.array([r is None for r in result.degenerate])
  return features.paraphrase_stability(z0, z_para, usable, z_next, edited)
