"""The EAGLE loop, one library function per stage, artefacts kept in the run folder.

  prepared.prepare(config)                  the domain world: ALS space Z, E_D, the utility
  actions(config, world)                    anchors (movie, user) and their candidate actions
  design(config, world, table)              one-step rollouts + G-optimal design per anchor
  reference(config, world, table)           SFT of pi_ref on the design's targets
  train.train(config, runner, ref_params)   REINFORCE + GAE + KL to pi_ref
  evaluate(config, runner, ...)             held-out comparison with baselines + report

A stage reuses its artefacts while their fingerprint matches the config (`run_folder`) and
rebuilds them otherwise; an upstream artefact that is missing or stale is refused in one
line naming what changed. `load_*` read a finished stage without building anything.
"""

from __future__ import annotations

import dataclasses
import json
import shutil

import jax
import numpy as np

from eagle_jax import distributed
from eagle_jax.actions import anchors
from eagle_jax.agent import nets, reference as reference_lib
from eagle_jax.design import subsets as design_subsets
from eagle_jax.environment import features, build as runtime
from eagle_jax.loop import rollout, train
from eagle_jax.run import artifacts, checkpoint, folder as run_folder
from eagle_jax.world import descriptions


def actions(config, world, generate_fn=None, progress: bool = True) -> anchors.AnchorTable:
  """The anchor table: reused while current, else built (an LLM source uses `generate_fn`,
  by default the config's environment LLM)."""
  folder = run_folder.RunFolder(config)
  if folder.is_current("anchors"):
    return load_anchors(config)
  if generate_fn is None and config.actions.source != "library":
    generate_fn = runtime.generate_fn(runtime.build_environment(config), config)
  table = anchors.build_table(world, config, generate_fn=generate_fn, progress=progress)
  table.save(folder.data("anchors"))
  folder.write_manifest("anchors", {"anchors": table.num_anchors,
                                    "heldout": int(table.heldout.sum())})
  return table


def load_anchors(config) -> anchors.AnchorTable:
  folder = run_folder.RunFolder(config)
  folder.require("anchors")
  return anchors.AnchorTable.load(folder.data("anchors"))


@dataclasses.dataclass
class Design:
  """The design's anchors with their one-step rollouts and G-optimal subsets."""
  anchors: np.ndarray        # [A] rows of the anchor table
  subsets: np.ndarray        # [A, n] the chosen candidates
  z_next: np.ndarray         # [A, K, d] E_D latents of the one-step rewrites
  next_utility: np.ndarray   # [A, K]
  summary: dict              # coverage, steerability, solver stats, the rollout cache's use


def design(config, world, table, runner=None) -> Design:
  """One-step rollouts of the design anchors' candidates (cached per anchor), the G-optimal
  design over their next-state latents, and the environment's diagnostics. `runner` is
  built from the config when the design must be (re)computed and none is given."""
  from eagle_jax.design import one_step
  folder = run_folder.RunFolder(config)
  if folder.is_current("design"):
    return load_design(config)
  runner = runner or rollout.make_runner(config, world, table)
  K = table.mask.shape[1]
  rows = table.design_rows(config.design.num_anchors)
  mask = table.mask[rows]
  steps = one_step.one_step_rollouts(
      runner, config, rows, anchors_per_call=max(1, 4 * config.llm.batch_size // K))
  z_next, next_utility, rewrites = steps.z, steps.utility, steps.texts
  subsets, stats = design_subsets.design_subsets(z_next, mask, config.design, config.seed)
  random = design_subsets.random_subsets(mask, config.design.subset_size, config.seed)
  coverage = {"goptimal": design_subsets.subset_coverage(z_next, mask, subsets),
              "random": design_subsets.subset_coverage(z_next, mask, random)}
  # Does the environment follow the edits, does the action matter one step ahead, and does
  # E_D's reading of the edit predict it?
  cands = features.initial_features(world, table)[2][rows]
  steer = features.steerability(cands[..., -1], next_utility, mask)
  steer.update(features.fitted_predictor_gain(cands, next_utility, mask, table.items[rows]))
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
             "candidates": K, "anchors": len(rows), "table_anchors": table.num_anchors,
             "one_step": {"fingerprints": steps.fingerprints, "reused": steps.reused,
                          "rerun": steps.rerun},
             **{k: v.tolist() for k, v in stats.items()}}
  artifacts.write_npz(folder.data("design"), anchors=rows, subsets=subsets, z_next=z_next,
                      next_utility=next_utility)
  summary = folder.write_manifest("design", summary)
  return Design(rows, subsets, z_next, next_utility, summary)


def load_design(config) -> Design:
  folder = run_folder.RunFolder(config)
  summary = folder.require("design")
  d = artifacts.read_npz(folder.data("design"))
  return Design(d["anchors"], d["subsets"], d["z_next"], d["next_utility"], summary)


def _paraphrase_stability(runner, rows, texts, z_next, edited, seed) -> dict:
  """Each design anchor (text `texts`) rewritten by `features.PARAPHRASE`: E_D's move
  against an edit's."""
  world, table = runner.world, runner.table
  emb0 = world.text_emb[table.items[rows]]
  action_emb = np.repeat(world.embed_text([features.PARAPHRASE]), len(rows), axis=0)
  result, emb, _ = runner.step(texts, [features.PARAPHRASE] * len(rows), rows, seed, emb0,
                               action_emb)
  _, z0 = runner.state_features(emb0)
  _, z_para = runner.state_features(emb)
  usable = np.array([r is None for r in result.degenerate])
  return features.paraphrase_stability(z0, z_para, usable, z_next, edited)


def reference(config, world, table, progress: bool = True) -> tuple[dict, dict]:
  """pi_ref of config.reference.kind: (params, metrics), reused while current, else trained
  on the design's targets and saved (checkpoint and metrics replaced together). Host-local:
  this process's devices, its own checkpoint reads and writes (in a multi-process job the
  pre-train stages run on process 0 alone)."""
  folder = run_folder.RunFolder(config)
  if folder.is_current("reference"):
    return (load_reference(config, world, table, host_local=True),
            folder.recorded("reference"))
  c = config.reference
  d = load_design(config)
  train_batch, heldout_batch = reference_lib.design_batches(
      world, table, d.anchors, d.subsets, d.next_utility, c.kind, config.rl.horizon,
      c.label_smoothing)
  scorer, _ = train.networks(config, config.rl.horizon)
  params, metrics = reference_lib.train_reference(
      scorer, train_batch, heldout_batch, lr=c.lr, steps=c.steps,
      mesh=distributed.mesh_from_config(config, local=True), seed=config.seed,
      weight_decay=c.weight_decay, progress=progress)
  metrics.update(reference_lib.policy_entropy(world, table, scorer, params))
  # The manifest goes first and comes back last: a crash in between leaves no stale claim.
  folder.manifest("reference").unlink(missing_ok=True)
  final = folder.reference_dir()
  staging = final.with_name(f".{final.name}.staging")
  shutil.rmtree(staging, ignore_errors=True)
  with checkpoint.Checkpointer(staging, max_to_keep=1, host_local=True) as ckpt:
    ckpt.save(c.steps, params=params, opt_state={}, rng=jax.random.key(0),
              config_json=json.loads(config.to_json()))
  artifacts.replace_dir(staging, final)
  return params, folder.write_manifest("reference", metrics)


def load_reference(config, world, table, host_local: bool = False):
  """The params of the current pi_ref (config.reference.kind); `host_local`: read by this
  process alone (else every process of the job calls this)."""
  folder = run_folder.RunFolder(config)
  folder.require("reference")
  scorer, _ = train.networks(config, config.rl.horizon)
  # Replicated on this host's devices: rollouts read the reference where they run.
  on_host = jax.NamedSharding(distributed.make_mesh(devices=jax.local_devices()), jax.P())
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=on_host),
      jax.eval_shape(lambda: nets.init_policy(
          jax.random.key(config.seed), scorer, **features.feature_dims(world, table))))
  return checkpoint.restore_params(folder.reference_dir(), abstract, host_local=host_local)


def evaluate(config, runner, policy, ref_params, history, verbose: bool = True):
  """The trained policy against its reference, random and the configured baselines on the
  held-out anchors: (results, episodes); writes eval.json and report.png."""
  from eagle_jax.loop import evaluate as evaluate_lib
  from eagle_jax.run import report
  folder = run_folder.RunFolder(config)
  world, table = runner.world, runner.table
  scorer, _ = train.networks(config, config.rl.horizon)
  c = config.eval
  results, episodes = evaluate_lib.compare_policies(
      runner, scorer, policy, ref_params, table.split(heldout=True),
      episodes_per_pair=c.episodes_per_pair, best_of_n=c.best_of_n, seed=config.seed,
      greedy_baseline=c.greedy_baseline, predicted_baseline=c.predicted_baseline,
      verbose=verbose)
  artifacts.write_json(folder / run_folder.EVAL, results)
  eagle = episodes["eagle"]
  environment = (f"synthetic (rho {config.env.synthetic_rho})"
                 if config.env.kind == "synthetic" else config.llm.model)
  report.write_report(
      folder / run_folder.REPORT, history=history, comparison=results,
      catalogue_z=world.item_z, trajectories=eagle.z, anchor_z=eagle.z[:, 0],
      title=f"EAGLE on {world.catalogue.name}: {environment} environment, "
            f"{config.reference.kind} reference, H={config.rl.horizon}")
  return results, episodes
