"""One-step rollouts of every candidate, cached per anchor and keyed on what they depend on.

`design` applies each of an anchor's K candidate actions once to x_0: K rewrites per
anchor, the costliest part of the stage. Each anchor's result is kept in
<workdir>/one_step/{row}_{user_id}.npz together with the fingerprint of everything it was
computed from: the environment LLM and its sampling, the rewrite prompt, the seed, the
utility, the anchor (movie, user, candidate actions) and the prepared world (ALS factors,
E_D). A file with the same fingerprint is reused, so an interrupted run resumes where it
stopped; any other file (another config, another world, or an older file without a
fingerprint) is recomputed and overwritten.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import tqdm

from eagle_jax.run import artifacts, folder as run_folder
from eagle_jax.errors import EagleError
# llm settings that change how fast rewrites come, not what they are. Of the prompt
# buckets only the largest matters (longer prompts are truncated to it): it is kept apart.
_LLM_THROUGHPUT = ("batch_size", "prompt_buckets")


@dataclasses.dataclass
class OneStep:
  """The rollouts of the requested anchors, and what the cache did."""
  z: np.ndarray             # [A, K, d] E_D latents of the rewrites (zeros where padded)
  utility: np.ndarray       # [A, K] U of the rewrites
  texts: list[list[str]]    # [A][K] the rewrites ("" where padded)
  fingerprints: dict        # world: stage -> fingerprint; config: shared key; anchors: file -> key
  reused: int               # anchors read from a file with a matching fingerprint
  rerun: int                # anchors rolled out now (no file, or a stale one)


def world_fingerprints(config) -> dict[str, str]:
  """The prepared world's identity: the fingerprints of its stage manifests (ALS factors for
  the utility's catalogue and users, the text embeddings and E_D's head for the rewrites' z)."""
  folder = run_folder.RunFolder(config)
  out = {}
  for name in run_folder.WORLD:
    manifest = folder.recorded(name)
    if manifest is None:
      raise EagleError(f"{folder.manifest(name)} not found: run `python -m eagle_jax prepare` "
                       "first")
    out[name] = manifest["fingerprint"]
  return out


def config_fingerprint(config, world: dict[str, str]) -> str:
  """The key shared by every anchor: the settings that can change a rollout's outputs."""
  llm = {k: v for k, v in config.llm.to_dict().items() if k not in _LLM_THROUGHPUT}
  return artifacts.fingerprint(llm, max(config.llm.prompt_buckets), config.env.to_dict(),
                               config.utility.to_dict(), config.seed, world)


def anchor_fingerprint(shared: str, table, row: int, personalise: bool) -> str:
  """One anchor's key: the shared key plus its movie, user, candidates and, when the prompt
  carries it, the user's profile."""
  return artifacts.fingerprint(
      shared, int(table.items[row]), int(table.user_ids[row]), list(table.actions[row]),
      np.asarray(table.mask[row]).tolist(), table.profiles[row] if personalise else None)


def _cached_fingerprint(path: pathlib.Path) -> str | None:
  if not path.is_file():
    return None
  with np.load(path, allow_pickle=False) as z:
    return str(z["fingerprint"]) if "fingerprint" in z.files else None


def one_step_rollouts(runner, config, rows: np.ndarray, anchors_per_call: int) -> OneStep:
  """Rollouts of the given anchors (rows of runner.table), reused or recomputed per anchor.

  Args:
    runner: has `.table` (a AnchorTable) and `one_step_all(rows, seed)` returning
      (z [A, K, d], utility [A, K], texts [A][K]), e.g. `rollout.EpisodeRunner`.
    config: the run config; config.workdir holds the prepared world and the cache.
    rows: [A] anchors to return, in this order.
    anchors_per_call: anchors rolled out per `one_step_all` call (a file is written after
      each call, so an interruption loses at most one call).
  """
  table = runner.table
  folder = run_folder.RunFolder(config) / run_folder.ONE_STEP
  world = world_fingerprints(config)
  shared = config_fingerprint(config, world)
  names = {i: f"{int(i)}_{int(table.user_ids[i])}" for i in rows}
  keys = {i: anchor_fingerprint(shared, table, i, config.env.personalise) for i in rows}
  paths = {i: folder / f"{names[i]}.npz" for i in rows}
  todo = [i for i in rows if _cached_fingerprint(paths[i]) != keys[i]]
  for start in tqdm.trange(0, len(todo), anchors_per_call, desc="one-step rollouts",
                           unit="chunk"):
    chunk = np.array(todo[start:start + anchors_per_call])
    z, u, texts = runner.one_step_all(chunk, seed=config.seed)
    for j, a in enumerate(chunk):
      artifacts.write_npz(paths[a], z=z[j], utility=u[j], texts=np.array(texts[j], np.str_),
                          fingerprint=np.str_(keys[a]))
  loaded = [artifacts.read_npz(paths[i]) for i in rows]
  return OneStep(
      z=np.stack([x["z"] for x in loaded]), utility=np.stack([x["utility"] for x in loaded]),
      texts=[x["texts"].tolist() for x in loaded],
      fingerprints={"world": world, "config": shared,
                    "anchors": {names[i]: keys[i] for i in rows}},
      reused=len(rows) - len(todo), rerun=len(todo))
