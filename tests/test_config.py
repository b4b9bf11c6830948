"""Config loading: variants, typed overrides, and one-line errors for bad keys."""

import pytest

from eagle_jax.config import load_config
from eagle_jax.errors import EagleError

DEMO = "experiments/demo.py"


def test_demo_loads_with_typed_overrides():
  c = load_config(DEMO, ["als.dim=16", "als.reg=5", "llm.model=gemma3-270m", "als.implicit=True"])
  assert c.als.dim == 16
  assert c.als.reg == 5.0 and isinstance(c.als.reg, float)  # int literal widened to float
  assert c.llm.model == "gemma3-270m"
  assert c.als.implicit is True


def test_variant_selects_smaller_run():
  assert load_config(DEMO + ":smoke").als.iterations < load_config(DEMO).als.iterations


@pytest.mark.parametrize("override, message", [
    ("als.dimm=3", "unknown config key 'als.dimm'"),
    ("nope.dim=3", "unknown config key 'nope'"),
    ("als.dim=abc", "expected int"),
    ("als.implicit=1", "expected a bool"),
    ("als.dim", "key.path=value"),
])
def test_bad_override_names_the_key(override, message):
  with pytest.raises(EagleError, match=message):
    load_config(DEMO, [override])


def test_missing_config_file():
  with pytest.raises(EagleError, match="config file nope.py not found"):
    load_config("nope.py")


def test_config_is_locked_after_loading():
  c = load_config(DEMO)
  with pytest.raises(AttributeError):
    c.als.new_key = 1


@pytest.mark.parametrize("variant", ["", ":gpu"])
def test_steering_experiment_can_see_the_demos_effect(variant):
  from eagle_jax import describe, evaluate
  c, demo = load_config("experiments/steering.py" + variant), load_config(DEMO)
  heldout = round(c.actions.num_anchors * c.actions.heldout_fraction)
  # The demo measured EAGLE - random +0.018 with a paired sd of 0.055.
  assert heldout >= evaluate.anchors_for_power(0.018, 0.055)
  # The demo's catalogue text, so `describe` copies the shipped descriptions.
  fields = {1: "Toy Story (1995). Genres: Comedy."}
  assert describe.fingerprint(c, fields) == describe.fingerprint(demo, fields)
  assert c.data == demo.data and c.encoder == demo.encoder
  assert c.rl.batch_size % c.llm.batch_size == 0 or c.llm.batch_size % c.rl.batch_size == 0
