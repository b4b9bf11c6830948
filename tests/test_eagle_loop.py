"""The whole EAGLE loop on real data and the real encoder, with a tiny random decoder as the
environment (gemma-style dummy model: the real SmolLM2 tokenizer and sampler, random weights),
so it runs in about a minute. It calls the stage functions a command calls: prepare ->
actions -> design (one-step rollouts + G-optimal design) -> reference SFT -> policy gradient
with checkpoints -> exact resume -> held-out comparison -> report; then checks that a changed
setting rebuilds exactly the stages that read it."""

import dataclasses
import shutil

import jax
import numpy as np
import pytest

from eagle_jax import distributed
from eagle_jax.design import subsets as design_subsets
from eagle_jax.environment import rewrite as env_lib
from eagle_jax.loop import rollout, stages, sweep, train
from eagle_jax.run import artifacts, folder as run_folder
from eagle_jax.world import prepared
from eagle_jax.config import load_config
from eagle_jax.errors import EagleError
from eagle_jax.llm import model as model_lib
from eagle_jax.llm import sampler as sampler_lib
from eagle_jax.llm.config import ModelConfig
from eagle_jax.llm.weights import load_model

pytestmark = pytest.mark.slow

# A reference that fits its targets exactly (the demo's smooths them and stops early).
SHARP_REFERENCE = ("reference.lr=3e-3", "reference.steps=60", "reference.label_smoothing=0.0")


def smoke_config(workdir, *overrides):
  return load_config("experiments/demo.py:smoke",
                     [f"workdir={str(workdir)!r}", *SHARP_REFERENCE, *overrides])


def tiny_environment(config):
  real = load_model("smollm2")
  tiny_config = dataclasses.replace(ModelConfig.tiny("llama"), vocab_size=real.config.vocab_size)
  tiny = dataclasses.replace(real, config=tiny_config,
                             params=model_lib.init_params(tiny_config, jax.random.key(0)))
  sampler = sampler_lib.Sampler(tiny, buckets=(256, 512), batch_size=config.llm.batch_size,
                                mesh=distributed.make_mesh())
  return env_lib.EnvironmentLLM(
      sampler, prompt_template=config.env.prompt_template,
      max_new_tokens=config.llm.max_new_tokens, strategy=sampler_lib.make_strategy(0.7, 0, 0.95))


def runner_of(config, w, table, environment):
  return rollout.EpisodeRunner(w, table, environment, horizon=config.rl.horizon,
                               personalise=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  base = tmp_path_factory.mktemp("loop")
  config = smoke_config(base)
  w = prepared.prepare(config)
  table = stages.actions(config, w, progress=False)
  return config, w, table, runner_of(config, w, table, tiny_environment(config))


@pytest.fixture(scope="module")
def reference_params(world):
  config, w, table, runner = world
  design = stages.design(config, w, table, runner)
  params, metrics = stages.reference(config, w, table, progress=False)
  return params, metrics, design.z_next, design.subsets


def test_prepared_world_is_consistent(world):
  config, w, table, _ = world
  assert w.item_z.shape == (len(w.items), config.als.dim)
  assert w.text_emb.shape == (len(w.items), 384)
  assert w.metrics["ed_head"]["num_test_movies"] > 0
  # Anchors: distinct movies, held-out ones never among the training movies.
  assert len(set(table.items.tolist())) == table.num_anchors
  assert table.heldout.sum() == 2
  assert table.mask.sum(1).tolist() == [6] * table.num_anchors


def test_design_covers_candidates_better_than_random(world, reference_params):
  config, _, table, _ = world
  _, metrics, z_next, subsets = reference_params
  assert z_next.shape == (table.num_anchors, 6, config.als.dim)
  assert subsets.shape == (table.num_anchors, config.design.subset_size)
  goptimal = design_subsets.subset_coverage(z_next, table.mask, subsets)
  random = design_subsets.subset_coverage(
      z_next, table.mask, design_subsets.random_subsets(table.mask, config.design.subset_size, 0))
  assert goptimal["max_leverage"] <= random["max_leverage"] + 1e-3
  assert metrics["train_accuracy"] == 1.0  # argmax of pi_ref lies in the design subset


def _train(world, ref_params, workdir, iterations, resume):
  config, _, _, runner = world
  config = smoke_config(workdir, f"rl.iterations={iterations}")
  return train.train(config, runner, ref_params, distributed.make_mesh(), resume=resume,
                     progress=False)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # Orbax's reader.
def test_an_unreadable_latest_step_is_set_aside_in_one_line_and_replayed(
    world, reference_params, tmp_path, capsys):
  ref_params = reference_params[0]
  _train(world, ref_params, tmp_path, 2, resume=False)
  for path in (tmp_path / "checkpoints" / "2").rglob("*"):
    if path.is_file():
      path.write_bytes(path.read_bytes()[:16])
  capsys.readouterr()
  _, _, history = _train(world, ref_params, tmp_path, 3, resume=True)
  out = capsys.readouterr().out.splitlines()
  lines = [line for line in out if "cannot be restored" in line]
  assert len(lines) == 1 and "resuming from step 1" in lines[0], out
  assert (tmp_path / run_folder.CORRUPT_CHECKPOINTS / "2").is_dir()
  assert [r["step"] for r in history] == [1, 2, 3]
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()
                if p.name.isdigit()) == ["1", "2", "3"]  # Checkpointed every step.
  # The policy moved away from its reference. (That a resume replays the uninterrupted run
  # exactly is tests/test_cli_resume.py's check, with a SIGKILL.)
  assert history[-1]["loss/kl"] > 0
  assert history[-1]["env/tokens_per_s"] > 0 and 0 < history[-1]["time/non_llm_fraction"] < 1


def test_fresh_run_refuses_to_overwrite_checkpoints(world, reference_params, tmp_path):
  _train(world, reference_params[0], tmp_path, 1, resume=False)
  from eagle_jax.errors import EagleError
  with pytest.raises(EagleError, match="pass --resume"):
    _train(world, reference_params[0], tmp_path, 1, resume=False)


def test_batch_not_divisible_by_the_devices_is_refused_before_any_rollout(world, tmp_path,
                                                                         monkeypatch):
  n = jax.device_count()
  if n == 1:
    pytest.skip("needs several devices (make test fakes 8)")
  config, _, _, runner = world
  monkeypatch.setattr(runner, "run",
                      lambda *a, **k: pytest.fail("a rollout ran before the batch size was "
                                                  "checked"))
  from eagle_jax.errors import EagleError
  with pytest.raises(EagleError, match=f"rl.batch_size={n + 1}: not divisible by the {n}"):
    train.train(smoke_config(tmp_path, f"rl.batch_size={n + 1}"), runner, None,
                distributed.make_mesh(), resume=False, progress=False)


def test_evaluation_and_report(world, reference_params, tmp_path):
  _, _, _, runner = world
  ref_params = reference_params[0]
  config = smoke_config(tmp_path, "eval.episodes_per_pair=2", "eval.best_of_n=2",
                        "eval.greedy_baseline=True")
  results, _ = stages.evaluate(config, runner, ref_params, ref_params,
                               history=[{"step": 1, "reward/mean": 1.0}], verbose=False)
  for name in ("eagle", "reference", "random", "greedy_one_step", "best_of_2"):
    assert results[name]["n"] == 4 and np.isfinite(results[name]["mean"])
  # Same policy, same environment seeds: identical outcomes (common random numbers).
  assert results["eagle"]["minus_reference"]["mean"] == 0.0
  assert results["reference"]["minus_random"]["n"] == 4 and "minus_random" not in results["random"]
  assert (tmp_path / run_folder.REPORT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  saved = artifacts.read_json(tmp_path / run_folder.EVAL)
  assert saved["eagle"]["minus_random"]["n"] == 4


def test_regenerated_candidates_at_later_states(world, reference_params):
  config, w, table, runner = world
  regen = rollout.EpisodeRunner(w, table, runner.env, horizon=config.rl.horizon,
                                personalise=False,
                                regenerate=rollout.Regenerator(w, config))
  rows = table.split(heldout=False)[:3]
  scorer, _ = train.networks(config, config.rl.horizon)
  episodes = regen.run(rows, rollout.scorer_policy(scorer, reference_params[0], greedy=True),
                       seed=0)
  K = table.mask.shape[1]
  assert episodes.masks.shape == (3, config.rl.horizon, K) and episodes.masks.all()
  for b, a in enumerate(rows):
    assert episodes.actions[b][0] == table.actions[a][episodes.chosen[b, 0]]  # x_0: the anchor's
  # x_1: a fresh library draw, so its candidates (and their features) are new.
  fresh = regen.candidates(1, rows, [t[1] for t in episodes.texts], seed=1)[0]
  assert all(set(f) != set(table.actions[a]) for f, a in zip(fresh, rows))
  assert all(e[1] in f for e, f in zip(episodes.actions, fresh))
  assert not np.allclose(episodes.candidates[:, 1, :, :384], table.action_emb[rows])
  batch = train.episodes_to_batch(
      episodes, rollout.logits_of(scorer, reference_params[0], episodes), "terminal")
  assert batch.actions.shape[:3] == (3, config.rl.horizon, K)


STAGES = ("latent", "text", "ed_head", "anchors", "design", "reference")


def load_config_json(workdir) -> dict:
  return artifacts.read_json(workdir / run_folder.CONFIG)


def _fingerprints(config) -> dict:
  folder = run_folder.RunFolder(config)
  return {s: folder.recorded(s)["fingerprint"] for s in STAGES}


@pytest.mark.parametrize("override, rebuilt", [
    ("llm.model='gemma3-270m'", {"design", "reference"}),
    ("env.prompt_template='Edit this: {entity} {context}so that {action}.'",
     {"design", "reference"}),
    ("reference.weight_decay=0.5", {"reference"}),
    ("profiles.like_threshold=4.5", {"anchors", "design", "reference"}),
])
def test_a_changed_setting_rebuilds_exactly_the_stages_that_read_it(
    world, reference_params, tmp_path, override, rebuilt):
  config, _, _, runner = world
  shutil.copytree(config.workdir, tmp_path, dirs_exist_ok=True)
  before = _fingerprints(smoke_config(tmp_path))
  changed = smoke_config(tmp_path, override)
  # Each stage as its command runs it: the world, then build (or reuse) the next.
  w = prepared.prepare(changed)
  table = stages.actions(changed, w, progress=False)
  stages.design(changed, w, table, runner_of(changed, w, table, runner.env))
  stages.reference(changed, w, table, progress=False)
  after = _fingerprints(changed)
  assert {s for s in STAGES if before[s] != after[s]} == rebuilt
  # Rebuilt artefacts are current for the new config and stale for the old one.
  stages.load_reference(changed, w, table)
  key = override.split("=")[0]
  with pytest.raises(EagleError, match=f"is stale: made with another config \\({key}: "):
    stages.load_reference(smoke_config(tmp_path), w, table)


def test_stale_upstream_is_one_line_naming_the_key(world, reference_params, tmp_path):
  config, w, table, _ = world
  shutil.copytree(config.workdir, tmp_path, dirs_exist_ok=True)
  changed = smoke_config(tmp_path, "actions.num_generic=2")
  with pytest.raises(EagleError) as e:
    stages.reference(changed, w, table, progress=False)
  assert ("anchors.json is stale: made with another config (actions.num_generic: 3 -> 2)"
          in str(e.value))
  assert "`python -m eagle_jax actions`" in str(e.value) and "\n" not in str(e.value)
  # Another seed: the world itself is stale, refused before the catalogue is read.
  with pytest.raises(EagleError,
                     match="latent.json is stale: made with another config \\(seed: 0 -> 1\\)"):
    prepared.load(smoke_config(tmp_path, "seed=1"))


def test_rerun_reference_replaces_its_checkpoint(world, reference_params, tmp_path):
  config, w, table, _ = world
  shutil.copytree(config.workdir, tmp_path, dirs_exist_ok=True)
  first = stages.load_reference(smoke_config(tmp_path), w, table)
  changed = smoke_config(tmp_path, "reference.lr=1e-2")
  params, _ = stages.reference(changed, w, table, progress=False)
  loaded = stages.load_reference(changed, w, table)
  jax.tree.map(np.testing.assert_array_equal, loaded, params)
  assert not all(np.array_equal(a, b) for a, b in
                 zip(jax.tree.leaves(first), jax.tree.leaves(loaded)))
  kind_dir = run_folder.RunFolder(changed).reference_dir()
  assert sorted(p.name for p in kind_dir.parent.iterdir()) == [kind_dir.name]  # No leftovers.


def test_a_stage_shared_by_a_sweep_is_reused_in_the_other_run_folder(world, reference_params,
                                                                     tmp_path):
  config, w, table, _ = world
  overrides = [*SHARP_REFERENCE, "reference.weight_decay=0.5"]
  for command in ("prepare", "actions", "design"):
    sweep.share(sweep.Step(str(tmp_path), command, [], overrides, shared_from=config.workdir),
                "experiments/demo.py:smoke")
  point = smoke_config(tmp_path, "reference.weight_decay=0.5")
  assert load_config_json(tmp_path)["reference"]["weight_decay"] == 0.5
  design = stages.load_design(point)  # Current here, without running anything.
  np.testing.assert_array_equal(design.subsets, reference_params[3])
  prepared.load(point)
  with pytest.raises(EagleError, match="reference_goptimal.json not found"):
    stages.load_reference(point, w, table)
