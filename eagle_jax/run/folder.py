"""The run folder: the name of every artefact of a run, and when each one is current.

  <workdir>/
    config.json                      the resolved config of the last stage run here
    descriptions.csv, .json          describe: the catalogue's text (fields + LLM plot)
    latent.npz, .json                prepare: the ALS latent space Z
    text.npz, .json                  prepare: MiniLM embeddings of the descriptions
    ed_head.npz, .json               prepare: E_D's regression head text -> Z
    profiles.json, actions/          actions: per-user and per-pair caches
    anchors.npz, .json               actions: the anchor table (movie, user, candidates)
    one_step/                        design: per-anchor one-step rollouts (own fingerprints)
    design.npz, .json                design: next-state latents and G-optimal subsets
    reference/<kind>/, reference_<kind>.json    train-reference: pi_ref (Orbax) + metrics
    checkpoints/, metrics.jsonl, tb/ train: the policy (Orbax) and its logs
    checkpoints_unreadable/          train --resume: damaged steps, set aside
    eval.json, report.png            train: the held-out comparison
    export/                          export: params for inference

A stage's manifest (`<stage>.json`) records its fingerprint: a hash of the config values the
stage and every stage upstream of it read (`inputs`), the fingerprints its direct upstream
stages had when it was built, and for `text` the descriptions themselves. A stage is reused
only while that fingerprint is what the config gives now; `require` turns a missing or stale
artefact into one line naming the changed keys and the command that rebuilds it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shutil

from eagle_jax.run import artifacts
from eagle_jax.config import diff, flat_config
from eagle_jax.errors import EagleError

CONFIG = "config.json"
DESCRIPTIONS_CSV = "descriptions.csv"
DESCRIPTIONS_MANIFEST = "descriptions.json"
DESCRIPTIONS_PARTIAL = "describe.partial.jsonl"
PROFILES = "profiles.json"
ACTIONS = "actions"
ONE_STEP = "one_step"
CHECKPOINTS = "checkpoints"
CORRUPT_CHECKPOINTS = "checkpoints_unreadable"
METRICS = "metrics.jsonl"
TENSORBOARD = "tb"
EVAL = "eval.json"
REPORT = "report.png"
EXPORT = "export"
CHECK_SIGNAL = "check_signal"


@dataclasses.dataclass(frozen=True)
class Stage:
  command: str                 # the CLI command that builds it
  keys: tuple[str, ...]        # config keys it reads; "section." is the whole section
  upstream: tuple[str, ...]    # stages whose artefacts it reads
  data: str = ""               # its data file (the manifest is <name>.json)
  files: tuple[str, ...] = ()  # what travels with it: its caches, or text it reads


# What decodes text without changing it: batch sizes, and the native kernels (the same
# products, summed in another order, as another batch size's GEMM would). Left out, so a faster
# setting reuses.
_THROUGHPUT = ("llm.batch_size", "llm.native_kernels", "encoder.batch_size",
               "describe.batch_size")
# The environment's text: the LLM and how it samples.
_LLM = ("llm.",)

STAGES = {
    "latent": Stage("prepare", ("data.source", "als.", "seed"), (), "latent.npz"),
    "text": Stage("prepare", ("data.", "encoder.model", "encoder.max_length",
                              "encoder.plot_weight"), (), "text.npz",
                  (DESCRIPTIONS_CSV, DESCRIPTIONS_MANIFEST)),
    "ed_head": Stage("prepare", ("encoder.", "seed"), ("latent", "text"), "ed_head.npz"),
    "anchors": Stage("actions", ("actions.", "profiles.", "seed"), ("ed_head",), "anchors.npz",
                     (PROFILES, ACTIONS)),
    "design": Stage("design", ("design.", "env.", "utility.", *_LLM), ("anchors",),
                    "design.npz", (ONE_STEP,)),
    "reference": Stage("train-reference", ("reference.", "rl.horizon"), ("design",)),
}
WORLD = ("latent", "text", "ed_head")  # `prepare`'s stages: the domain world.


def stages_of(command: str) -> tuple[str, ...]:
  """The stages a CLI command builds (none: it is not cached, e.g. `train`)."""
  return tuple(name for name, stage in STAGES.items() if stage.command == command)


def _own_keys(config, stage: str) -> tuple[str, ...]:
  keys = STAGES[stage].keys
  if stage == "text" and config.data.descriptions == "described":
    keys += ("describe.",)  # The descriptions are `describe`'s output.
  if stage == "anchors" and config.actions.source != "library":
    keys += _LLM  # The LLM writes actions.
  return keys


def _closure(stage: str) -> list[str]:
  """The stage and every stage upstream of it."""
  out = []
  for up in STAGES[stage].upstream:
    out += [s for s in _closure(up) if s not in out]
  return out + [stage]


def inputs(config, stage: str) -> dict:
  """The config values `stage` depends on, its upstream stages' included."""
  flat = flat_config(config)
  patterns = [k for s in _closure(stage) for k in _own_keys(config, s)]
  return {k: v for k, v in sorted(flat.items())
          if any(k == p or (p.endswith(".") and k.startswith(p)) for p in patterns)
          and k not in _THROUGHPUT}


def inputs_key(config, stage: str) -> str:
  """A hash of `inputs` alone: equal for two configs that build the same artefact (sweeps
  share such stages)."""
  return artifacts.fingerprint(inputs(config, stage))


class RunFolder:
  """A run directory and its config: paths by name, manifests with fingerprints."""

  def __init__(self, config):
    self.config = config
    self.root = pathlib.Path(config.workdir)

  def __truediv__(self, name: str) -> pathlib.Path:
    return self.root / name

  def data(self, stage: str) -> pathlib.Path:
    return self.root / STAGES[stage].data

  def manifest(self, stage: str) -> pathlib.Path:
    return self.root / f"{self._name(stage)}.json"

  def _name(self, stage: str) -> str:
    return f"reference_{self.config.reference.kind}" if stage == "reference" else stage

  def reference_dir(self) -> pathlib.Path:
    return self.root / "reference" / self.config.reference.kind

  def recorded(self, stage: str) -> dict | None:
    path = self.manifest(stage)
    return artifacts.read_json(path) if path.is_file() else None

  def fingerprint(self, stage: str, content: str | None = None) -> str:
    """What `stage`'s manifest must hold to be current. `content` hashes data the config
    does not name (the descriptions' text); None trusts the one the manifest recorded."""
    if content is None:
      content = (self.recorded(stage) or {}).get("content", "")
    upstream = {u: (self.recorded(u) or {}).get("fingerprint") for u in STAGES[stage].upstream}
    return artifacts.fingerprint(inputs(self.config, stage), upstream, content)

  def is_current(self, stage: str, content: str | None = None) -> bool:
    manifest = self.recorded(stage)
    return bool(manifest) and manifest.get("fingerprint") == self.fingerprint(stage, content)

  def write_manifest(self, stage: str, body: dict, content: str = "") -> dict:
    """Written after the stage's data: a manifest names a finished stage."""
    manifest = {**body, "fingerprint": self.fingerprint(stage, content), "content": content,
                "inputs": inputs(self.config, stage),
                "upstream": {u: self.recorded(u)["fingerprint"] for u in STAGES[stage].upstream}}
    artifacts.write_json(self.manifest(stage), manifest)
    self.save_config()
    return manifest

  def require(self, stage: str, content: str | None = None) -> dict:
    """The manifest of a current `stage` (and, recursively, of its upstream), else one line
    that names what changed and the command that rebuilds it."""
    for up in STAGES[stage].upstream:
      self.require(up)
    name = self.manifest(stage).name
    command = f"`python -m eagle_jax {STAGES[stage].command}`"
    manifest = self.recorded(stage)
    if manifest is None:
      raise EagleError(f"{self.root / name} not found: run {command} first")
    if manifest.get("fingerprint") == self.fingerprint(stage, content):
      return manifest
    changed = diff(manifest.get("inputs", {}), inputs(self.config, stage))
    why = ("made with another config (" + "; ".join(changed) + ")" if changed else
           "made from other upstream artefacts or data")
    raise EagleError(f"{self.root / name} is stale: {why}; re-run {command} (or use another "
                     "--workdir)")

  def files(self, stage: str) -> list[pathlib.Path]:
    """Everything of `stage`'s in the folder: data, manifest and the files that travel with it."""
    data = self.reference_dir() if stage == "reference" else self.data(stage)
    return [data, self.manifest(stage), *(self.root / c for c in STAGES[stage].files)]

  def copy_stage(self, stage: str, to: RunFolder) -> None:
    """Gives run folder `to` this folder's artefacts of `stage` (hard links: no copy of the
    data), manifest last, so `to` reuses them exactly as this folder would."""
    for src, dst in zip(self.files(stage), to.files(stage)):
      if src == self.manifest(stage) or not src.exists():
        continue
      if src.is_dir():
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst, copy_function=os.link)
      else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.unlink(missing_ok=True)
        os.link(src, dst)
    artifacts.write_json(to.manifest(stage), artifacts.read_json(self.manifest(stage)))

  def save_config(self) -> pathlib.Path:
    path = self.root / CONFIG
    artifacts.write_json(path, json.loads(self.config.to_json()))
    return path
