"""The design stage's one-step cache: reused only when everything it depends on is unchanged.

A fake runner stands in for the environment (this tests the cache, not the rollouts): its
outputs carry a `version` so that a stale file read back is told apart from a fresh rollout.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

from eagle_jax.design import one_step
from eagle_jax.run import artifacts, folder as run_folder
from eagle_jax.config import load_config
from eagle_jax.errors import EagleError

A, K, D = 5, 4, 3
ROWS = np.arange(A)


class FakeRunner:
  """`one_step_all` over a small table; records which anchors it was asked to roll out."""

  def __init__(self, version: int = 0):
    counts = [4, 3, 4, 2, 4]  # Ragged: padded candidates must stay padded.
    self.table = types.SimpleNamespace(
        mask=np.arange(K)[None, :] < np.array(counts)[:, None],
        user_ids=np.arange(A) + 100, items=np.arange(A) * 7,
        actions=[[f"edit {a}.{k}" for k in range(n)] for a, n in enumerate(counts)],
        profiles=[f"viewer {a}" for a in range(A)])
    self.version = version
    self.rolled = []

  def one_step_all(self, rows, seed):
    self.rolled.extend(int(r) for r in rows)
    mask = self.table.mask[rows]
    z = np.stack([_z(r, self.version) for r in rows]) * mask[..., None]
    u = np.stack([_u(r, self.version) for r in rows]) * mask
    texts = [[_text(self.table, r, k, self.version) if mask[j, k] else "" for k in range(K)]
             for j, r in enumerate(rows)]
    return z, u, texts


def _z(row, version):
  return np.full((K, D), 10.0 * row + version, np.float32) + np.arange(K)[:, None]


def _u(row, version):
  return np.full(K, row - 0.5 * version, np.float32)


def _text(table, row, k, version):
  return f"{table.actions[row][k]} v{version}"


def _config(tmp_path, *overrides):
  return load_config("experiments/demo.py:smoke", [f"workdir={str(tmp_path)!r}", *overrides])


def _write_world(tmp_path, tag="a"):
  # The manifests `prepared.prepare` writes last; only their fingerprints are read.
  for name in run_folder.WORLD:
    artifacts.write_json(tmp_path / f"{name}.json", {"fingerprint": f"{name}-{tag}"})


def _run(runner, config):
  runner.rolled = []
  return one_step.one_step_rollouts(runner, config, ROWS, anchors_per_call=2)


def _assert_version(out, runner, rows, version):
  """The rows of `out` hold `version`'s rollouts (not a stale or a newer one)."""
  mask = runner.table.mask
  for r in rows:
    np.testing.assert_array_equal(out.z[r], _z(r, version) * mask[r][:, None])
    np.testing.assert_array_equal(out.utility[r], _u(r, version) * mask[r])
    assert out.texts[r] == [_text(runner.table, r, k, version) if mask[r, k] else ""
                            for k in range(K)]


@pytest.fixture
def cached(tmp_path):
  """A run dir whose cache holds version 0 of every anchor, and its runner."""
  _write_world(tmp_path)
  runner = FakeRunner(version=0)
  out = _run(runner, _config(tmp_path))
  assert sorted(runner.rolled) == ROWS.tolist() and (out.reused, out.rerun) == (0, A)
  _assert_version(out, runner, ROWS, 0)
  runner.version = 1  # From now on a rollout is told apart from a cached file.
  return tmp_path, runner


def test_same_config_reuses_every_anchor(cached):
  tmp_path, runner = cached
  out = _run(runner, _config(tmp_path))
  assert runner.rolled == [] and (out.reused, out.rerun) == (A, 0)
  _assert_version(out, runner, ROWS, 0)
  assert set(out.fingerprints["anchors"]) == {f"{r}_{100 + r}" for r in ROWS}
  assert out.fingerprints["world"] == {n: f"{n}-a" for n in run_folder.WORLD}


@pytest.mark.parametrize("override", [
    "llm.model='gemma3-270m'",
    "env.prompt_template='Rewrite {entity} so that {action}.{context}'",
    "env.personalise=True",
    "llm.temperature=0.7",
    "llm.max_new_tokens=16",
    "llm.prompt_buckets=(128, 256)",  # A lower limit truncates long prompts.
    "seed=1",
    "utility.lam=0.5",
])
def test_changed_setting_reruns_every_anchor(cached, override):
  tmp_path, runner = cached
  out = _run(runner, _config(tmp_path, override))
  assert sorted(runner.rolled) == ROWS.tolist() and (out.reused, out.rerun) == (0, A)
  _assert_version(out, runner, ROWS, 1)
  # The new rollouts replaced the files: the same setting now reuses them.
  out = _run(runner, _config(tmp_path, override))
  assert runner.rolled == [] and out.reused == A
  _assert_version(out, runner, ROWS, 1)


@pytest.mark.parametrize("override", [
    "llm.batch_size=64",
    "llm.prompt_buckets=(64, 512)",  # Same largest bucket: the same prompts.
    "design.subset_size=2",
    "rl.iterations=99",
])
def test_settings_a_rollout_does_not_read_keep_the_cache(cached, override):
  tmp_path, runner = cached
  out = _run(runner, _config(tmp_path, override))
  assert runner.rolled == [] and out.reused == A
  _assert_version(out, runner, ROWS, 0)


def test_refit_world_reruns_every_anchor(cached):
  # A re-prepared world (other ALS factors or E_D) changes every z and utility.
  tmp_path, runner = cached
  _write_world(tmp_path, tag="b")
  out = _run(runner, _config(tmp_path))
  assert sorted(runner.rolled) == ROWS.tolist()
  _assert_version(out, runner, ROWS, 1)


def test_changed_action_text_reruns_only_its_anchor(cached):
  tmp_path, runner = cached
  runner.table.actions[3] = ["make it a comedy", runner.table.actions[3][1]]
  out = _run(runner, _config(tmp_path))
  assert runner.rolled == [3] and (out.reused, out.rerun) == (A - 1, 1)
  _assert_version(out, runner, [3], 1)
  _assert_version(out, runner, [0, 1, 2, 4], 0)
  assert out.texts[3][0] == "make it a comedy v1"


def test_profile_counts_only_when_the_prompt_carries_it(cached):
  tmp_path, runner = cached
  runner.table.profiles[2] = "a new viewer"
  _run(runner, _config(tmp_path))
  assert runner.rolled == []
  personalised = _config(tmp_path, "env.personalise=True")
  _run(runner, personalised)
  assert sorted(runner.rolled) == ROWS.tolist()
  runner.table.profiles[4] = "another viewer"
  _run(runner, personalised)
  assert runner.rolled == [4]


def test_file_without_fingerprint_is_rerun(cached):
  # The format before fingerprints: same path and arrays, no key.
  tmp_path, runner = cached
  path = tmp_path / "one_step" / "1_101.npz"
  old = artifacts.read_npz(path)
  del old["fingerprint"]
  artifacts.write_npz(path, **old)
  out = _run(runner, _config(tmp_path))
  assert runner.rolled == [1] and (out.reused, out.rerun) == (A - 1, 1)
  _assert_version(out, runner, [1], 1)
  _assert_version(out, runner, [0, 2, 3, 4], 0)
  assert "fingerprint" in artifacts.read_npz(path)


def test_interrupted_run_resumes(tmp_path):
  _write_world(tmp_path)
  runner = FakeRunner()
  rollout = runner.one_step_all

  def fail_on_second_call(rows, seed):
    if runner.rolled:
      raise KeyboardInterrupt
    return rollout(rows, seed)

  runner.one_step_all = fail_on_second_call
  with pytest.raises(KeyboardInterrupt):
    _run(runner, _config(tmp_path))
  runner.one_step_all = rollout
  out = _run(runner, _config(tmp_path))
  # The first call's 2 anchors were written before the interruption.
  assert runner.rolled == [2, 3, 4] and (out.reused, out.rerun) == (2, 3)
  _assert_version(out, runner, ROWS, 0)


def test_missing_world_is_a_user_error(tmp_path):
  with pytest.raises(EagleError, match="prepare"):
    _run(FakeRunner(), _config(tmp_path))
