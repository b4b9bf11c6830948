"""Orbax checkpoints: exact round trips, retention, damaged steps, params-only export."""

from __future__ import annotations

import pathlib

import jax
import numpy as np
import optax
import pytest

from eagle_jax import distributed
from eagle_jax.agent import nets, rl
from eagle_jax.run import checkpoint
from eagle_jax.errors import EagleError

CONFIG = {"rl": {"kl_coef": 0.1, "horizon": 5}, "seed": 0, "name": "test"}


def _state(seed: int):
  """Params, a non-trivial optax state (a few Adam steps) and a split PRNG key."""
  scorer = nets.ActionScorer(hidden=8, num_steps=3)
  value_net = nets.ValueNet(hidden=8, num_steps=3)
  k1, k2 = jax.random.split(jax.random.key(seed))
  params = {"policy": nets.init_policy(k1, scorer, state_dim=4, user_dim=2, action_dim=3),
            "value": nets.init_value(k2, value_net, state_dim=4, user_dim=2)}
  optimizer = rl.make_optimizer(1e-2, 1e-2)
  opt_state = optimizer.init(params)
  for _ in range(2):
    grads = jax.tree.map(lambda p: np.full(p.shape, 0.1 + seed, p.dtype), params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
  rng = jax.random.split(jax.random.key(seed + 40))[1]
  return params, opt_state, rng


def _abstract(mesh, params, opt_state, rng):
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  to_struct = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated)
  return {"params": jax.tree.map(to_struct, params),
          "opt_state": jax.tree.map(to_struct, opt_state),
          "rng": to_struct(rng)}


def _assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert np.asarray(x).dtype == np.asarray(y).dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _save_steps(directory, steps, **kwargs):
  with checkpoint.Checkpointer(directory, **kwargs) as ckpt:
    for step in steps:
      params, opt_state, rng = _state(step)
      ckpt.save(step, params=params, opt_state=opt_state, rng=rng, config_json=CONFIG,
                extra={"episodes": 10 * step})
    ckpt.wait()


def test_round_trip_is_bit_identical(tmp_path):
  params, opt_state, rng = _state(1)
  _save_steps(tmp_path / "ckpt", [1])
  mesh = distributed.make_mesh()
  with checkpoint.Checkpointer(tmp_path / "ckpt") as ckpt:
    restored = ckpt.restore(_abstract(mesh, params, opt_state, rng))
  assert restored.step == 1
  _assert_trees_equal(restored.params, params)
  _assert_trees_equal(restored.opt_state, opt_state)  # optax namedtuples included.
  np.testing.assert_array_equal(jax.random.key_data(restored.rng), jax.random.key_data(rng))
  # The rewrapped key continues the same stream.
  np.testing.assert_array_equal(jax.random.normal(restored.rng, (3,)),
                                jax.random.normal(rng, (3,)))
  assert restored.config == CONFIG and restored.extra == {"episodes": 10}
  leaf = jax.tree.leaves(restored.params)[0]
  assert leaf.sharding.is_equivalent_to(
      jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()), leaf.ndim)


def test_keeps_the_last_n_steps(tmp_path):
  _save_steps(tmp_path / "ckpt", [1, 2, 3, 4, 5], max_to_keep=2)
  with checkpoint.Checkpointer(tmp_path / "ckpt", max_to_keep=2) as ckpt:
    assert ckpt.all_steps() == [4, 5]
    assert ckpt.latest_step() == 5
  assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["4", "5"]


def test_save_interval_skips_steps(tmp_path):
  params, opt_state, rng = _state(0)
  with checkpoint.Checkpointer(tmp_path / "ckpt", save_interval_steps=3) as ckpt:
    saved = [ckpt.save(s, params=params, opt_state=opt_state, rng=rng, config_json=CONFIG)
             for s in range(7)]
    ckpt.wait()
    assert saved == [True, False, False, True, False, False, True]
    assert ckpt.all_steps() == [0, 3, 6]


def _damage(step_dir: pathlib.Path, how: str) -> None:
  data_files = sorted(p for p in (step_dir / "params").rglob("*")
                      if p.is_file() and p.parent.name == "d")
  assert data_files, "expected OCDBT data files in the params item"
  for path in data_files:
    if how == "delete":
      path.unlink()
    else:
      path.write_bytes(path.read_bytes()[:16])


# Orbax's reader leaves a callback on a closed event loop after a failed read: noise only.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("how", ["delete", "truncate"])
def test_damaged_step_raises_or_falls_back(tmp_path, how):
  _save_steps(tmp_path / "ckpt", [1, 2])
  _damage(tmp_path / "ckpt" / "2", how)
  params, opt_state, rng = _state(1)
  abstract = _abstract(distributed.make_mesh(), params, opt_state, rng)
  with checkpoint.Checkpointer(tmp_path / "ckpt") as ckpt:
    with pytest.raises(EagleError, match=f"checkpoint {tmp_path / 'ckpt' / '2'} cannot be"):
      ckpt.restore(abstract)
    restored = ckpt.restore(abstract, fallback=True)
    assert len(restored.skipped) == 1 and str(tmp_path / "ckpt" / "2") in restored.skipped[0]
    # Set aside, the step is out of the manager's view and kept for a post mortem.
    assert ckpt.set_aside(2, tmp_path / "aside") == tmp_path / "aside" / "2"
    assert ckpt.all_steps() == [1] and (tmp_path / "aside" / "2" / "params").is_dir()
  assert restored.step == 1 and restored.extra == {"episodes": 10}
  _assert_trees_equal(restored.params, params)


def test_missing_checkpoints_are_clear_errors(tmp_path):
  params, opt_state, rng = _state(0)
  abstract = _abstract(distributed.make_mesh(), params, opt_state, rng)
  with checkpoint.Checkpointer(tmp_path / "empty") as ckpt:
    with pytest.raises(EagleError, match="no checkpoint in"):
      ckpt.restore(abstract)
  _save_steps(tmp_path / "ckpt", [1])
  with checkpoint.Checkpointer(tmp_path / "ckpt") as ckpt:
    with pytest.raises(EagleError, match=r"step 7 not in .*available: \[1\]"):
      ckpt.restore(abstract, step=7)
    with pytest.raises(EagleError, match="unknown checkpoint items"):
      ckpt.restore({"parmas": abstract["params"]})
  with pytest.raises(EagleError, match="not found"):
    checkpoint.export_params(tmp_path / "nowhere", None, tmp_path / "out")
  with pytest.raises(EagleError, match="not found"):
    checkpoint.load_exported(tmp_path / "nowhere", abstract["params"])


def test_params_only_restore_and_export(tmp_path):
  _save_steps(tmp_path / "ckpt", [1, 2])
  params1, _, _ = _state(1)
  params2, _, _ = _state(2)
  with checkpoint.Checkpointer(tmp_path / "ckpt") as ckpt:
    restored = ckpt.restore({"params": ckpt.abstract_params(1)}, step=1)
  assert restored.opt_state is None and restored.rng is None
  _assert_trees_equal(restored.params, params1)

  out = checkpoint.export_params(tmp_path / "ckpt", None, tmp_path / "export")
  assert not (out / "opt_state").exists()
  # Load onto a different layout (one device) than the one it was saved from.
  one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one_device),
                          params2)
  loaded = checkpoint.load_exported(out, abstract)
  _assert_trees_equal(loaded, params2)
  assert jax.tree.leaves(loaded)[0].sharding == one_device
  # Without a target: the saved shapes, replicated over every device.
  default = checkpoint.load_exported(out)
  _assert_trees_equal(default, params2)
  assert jax.tree.leaves(default)[0].sharding.is_fully_replicated
  assert len(jax.tree.leaves(default)[0].sharding.device_set) == jax.device_count()
  # Re-exporting an older step overwrites the export.
  checkpoint.export_params(tmp_path / "ckpt", 1, out)
  _assert_trees_equal(checkpoint.load_exported(out, abstract), params1)


def test_params_only_checkpoint_without_optimizer_state(tmp_path):
  """A finished network (e.g. the SFT reference) is saved with an empty optimizer state."""
  params, _, rng = _state(3)
  with checkpoint.Checkpointer(tmp_path / "ref", max_to_keep=1) as ckpt:
    ckpt.save(100, params=params, opt_state={}, rng=rng, config_json=CONFIG)
    ckpt.wait()
    restored = ckpt.restore({"params": ckpt.abstract_params(100)})
    _assert_trees_equal(restored.params, params)
    assert restored.step == 100 and restored.config == CONFIG
    with pytest.raises(EagleError, match="cannot be restored"):
      ckpt.restore({"params": ckpt.abstract_params(100), "opt_state": {"count": params}})
