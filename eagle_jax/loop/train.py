"""EAGLE's policy-gradient loop: rollouts in the real environment, one sharded update each.

Iteration i samples a batch of training anchors, plays B episodes of H edits with the
current policy (the environment LLM rewrites all B descriptions per step in one batched
call), scores x_H with the utility, records the frozen reference's logits, and takes one
jitted data-parallel REINFORCE + GAE + KL step. Every random draw of iteration i derives
from (seed, i), so `--resume` from a checkpoint replays the remaining iterations exactly.

On several hosts each process rolls out its own share of the B episodes on its own devices
(`distributed.process_rows`); the shares meet in one global batch on the mesh's `data`
axis, every process takes part in the update and the checkpoint, and process 0 logs.
"""

from __future__ import annotations

import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from jax.sharding import NamedSharding, PartitionSpec as P

from eagle_jax import distributed
from eagle_jax.agent import nets, rl
from eagle_jax.environment import features
from eagle_jax.loop import rollout
from eagle_jax.run import checkpoint, folder as run_folder
from eagle_jax import config as config_lib
from eagle_jax.errors import EagleError
from eagle_jax.run.logs import MetricsLogger, read_metrics


def networks(config, horizon: int) -> tuple[nets.ActionScorer, nets.ValueNet]:
  steps = max(8, horizon)
  return (nets.ActionScorer(hidden=config.reference.hidden, num_steps=steps),
          nets.ValueNet(hidden=config.reference.hidden, num_steps=steps))


def rl_config(config, scorer, value_net) -> rl.RLConfig:
  c = config.rl
  return rl.RLConfig(scorer=scorer, value_net=value_net, gamma=c.gamma,
                     gae_lambda=c.gae_lambda, kl_coef=c.kl_coef,
                     entropy_coef=c.entropy_coef, value_coef=c.value_coef,
                     normalize_advantages=c.normalize_advantages)


def with_value_bias(params, mean_return: float):
  """The value head's output bias set to the mean return, so the first advantages are
  centred rather than offset by the whole return (the value net starts near 0)."""
  value = dict(params["value"])
  value["value"] = {**value["value"], "bias": jnp.full_like(value["value"]["bias"], mean_return)}
  return {**params, "value": value}


def episodes_to_batch(episodes: rollout.Episodes, ref_logits: np.ndarray,
                      reward_mode: str) -> rl.Batch:
  """The update's host-local rows (numpy; `distributed.shard_batch` places them)."""
  H = episodes.chosen.shape[1]
  return rl.Batch(states=episodes.states[:, :H], final_states=episodes.states[:, H],
                  users=episodes.users, actions=episodes.candidates, masks=episodes.masks,
                  chosen=episodes.chosen,
                  rewards=episodes.rewards(reward_mode).astype(np.float32),
                  ref_logits=np.asarray(ref_logits))


def train(config, runner: rollout.EpisodeRunner, ref_params, mesh, *, resume: bool,
          progress: bool = True):
  """Runs config.rl.iterations updates (continuing from the last checkpoint with resume);
  returns (policy params, value params, history)."""
  c = config.rl
  shards = mesh.shape["data"]
  if c.batch_size % shards:  # Else the first update would fail, after a whole rollout.
    raise EagleError(f"config key rl.batch_size={c.batch_size}: not divisible by the {shards} "
                     "devices of the mesh's data axis")
  workdir = pathlib.Path(config.workdir)
  scorer, value_net = networks(config, c.horizon)
  optimizer = rl.make_optimizer(c.policy_lr, c.value_lr, c.max_grad_norm)
  train_step = rl.make_train_step(optimizer, rl_config(config, scorer, value_net), mesh)
  dims = features.feature_dims(runner.world, runner.table)
  value_params = nets.init_value(jax.random.key(config.seed + 1), value_net,
                                 state_dim=dims["state_dim"], user_dim=dims["user_dim"])
  state = rl.TrainState.create({"policy": ref_params, "value": value_params}, optimizer,
                               jax.random.key(config.seed))
  main = distributed.is_main_process()
  ckpt = checkpoint.Checkpointer(workdir / run_folder.CHECKPOINTS,
                                 max_to_keep=config.checkpoint.keep)
  start = 0
  if resume and ckpt.latest_step() is not None:
    replicated = NamedSharding(mesh, P())
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                            jax.eval_shape(lambda s: s, state))
    restored = ckpt.restore({"params": abstract.params, "opt_state": abstract.opt_state,
                             "rng": abstract.rng}, fallback=True)
    changed = config_lib.changed_keys(restored.config, config)
    if changed:
      raise EagleError(f"--resume: {ckpt.directory / str(restored.step)} was written with "
                       f"another config ({'; '.join(changed)}); resume with the same values "
                       "or start a new --workdir")
    unreadable = [s for s in ckpt.all_steps() if s > restored.step]
    if unreadable and main:  # Set aside, so the replayed steps are saved afresh.
      aside = workdir / run_folder.CORRUPT_CHECKPOINTS
      for step in unreadable:
        ckpt.set_aside(step, aside)
      print(f"{restored.skipped[0][:300]}; moved step(s) {unreadable} to {aside}, resuming "
            f"from step {restored.step}", flush=True)
    state = state.replace(params=restored.params, opt_state=restored.opt_state,
                          rng=restored.rng, step=jnp.asarray(restored.step, jnp.int32))
    start = restored.step
    if progress and main:
      print(f"resumed from {ckpt.directory / str(start)}", flush=True)
  elif not resume and ckpt.latest_step() is not None:
    raise EagleError(f"{ckpt.directory} already holds checkpoints: pass --resume to continue, "
                     "or choose a new --workdir")
  logger = None
  if main:
    run_folder.RunFolder(config).save_config()
    logger = MetricsLogger(workdir, truncate_after=start)
  train_anchors = runner.table.split(heldout=False)
  mine = distributed.process_rows(c.batch_size)  # This host's episodes of the global batch.
  base_key = jax.random.key(config.seed)
  bar = tqdm.trange(start, c.iterations, desc="EAGLE RL", disable=not (progress and main),
                    initial=start, total=c.iterations)
  for it in bar:
    t0 = time.perf_counter()
    key = jax.random.fold_in(base_key, it)
    pick_key, policy_key = jax.random.split(key)
    anchors = np.asarray(jax.random.choice(pick_key, train_anchors, (c.batch_size,)))[mine]
    policy = rollout.scorer_policy(scorer, state.params["policy"], greedy=False,
                                   rng=policy_key, first_episode=mine.start)
    episodes = runner.run(anchors, policy, seed=config.seed * 100_000 + it)
    ref_logits = rollout.logits_of(scorer, ref_params, episodes)
    batch = episodes_to_batch(episodes, ref_logits, c.reward)
    # Means over the global batch (every host holds as many episodes).
    means = distributed.mean_over_processes({
        "reward/mean": episodes.rewards(c.reward).sum(1).mean(),
        "utility/total": episodes.utility[:, -1].mean(),
        "utility/rating": episodes.rating[:, -1].mean(),
        "utility/distance": episodes.distance[:, -1].mean(),
        "env/degenerate": episodes.degenerate / len(anchors),
    })
    if it == 0:  # Fresh run: the first batch sets the value head's bias.
      state = state.replace(params=with_value_bias(state.params, means["reward/mean"]))
    t1 = time.perf_counter()
    state, metrics = train_step(state, distributed.shard_batch(mesh, batch))
    t2 = time.perf_counter()
    if (it + 1) % config.checkpoint.every == 0 or it + 1 == c.iterations:
      ckpt.save(it + 1, params=state.params, opt_state=state.opt_state, rng=state.rng,
                config_json=json.loads(config.to_json()))
    step_s = time.perf_counter() - t0
    scalars = {f"loss/{k}": float(v) for k, v in metrics.items()}
    scalars.update(means)
    scalars.update({
        "env/degenerate": round(means["env/degenerate"] * c.batch_size),
        "time/step_s": step_s,
        "time/llm_s": episodes.llm_s,
        "env/tokens_per_s": episodes.llm_tokens / max(episodes.llm_s, 1e-9),
        "env/remembered": episodes.llm_remembered,
        "time/update_s": t2 - t1,
        "time/non_llm_fraction": (step_s - episodes.llm_s) / step_s,
    })
    if logger:
      logger.write(it + 1, scalars)
    bar.set_postfix(U=f"{scalars['utility/total']:.3f}", kl=f"{scalars.get('loss/kl', 0):.3f}")
  ckpt.close()
  if not logger:
    return state.params["policy"], state.params["value"], []
  logger.close()
  return state.params["policy"], state.params["value"], read_metrics(workdir)
