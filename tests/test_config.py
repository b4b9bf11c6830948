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
  from eagle_jax.loop import evaluate
  from eagle_jax.world import describe
  c, demo = load_config("experiments/steering.py" + variant), load_config(DEMO)
  heldout = round(c.actions.num_anchors * c.actions.heldout_fraction)
  # The demo measured EAGLE - random +0.018 with a paired sd of 0.055.
  assert heldout >= evaluate.anchors_for_power(0.018, 0.055)
  # The demo's catalogue text, so `describe` copies the shipped descriptions.
  fields = {1: "Toy Story (1995). Genres: Comedy."}
  assert describe.fingerprint(c, fields) == describe.fingerprint(demo, fields)
  assert c.data == demo.data and c.encoder == demo.encoder
  assert c.rl.batch_size % c.llm.batch_size == 0 or c.llm.batch_size % c.rl.batch_size == 0


@pytest.mark.parametrize("override, message", [
    ("rl.batch_size=0", r"rl.batch_size=0: expected an integer >= 1"),
    ("rl.batch_size=-4", r"rl.batch_size=-4: expected an integer >= 1"),
    ("rl.horizon=0", r"rl.horizon=0: expected an integer >= 1"),
    ("rl.iterations=0", r"rl.iterations=0: expected an integer >= 1"),
    ("checkpoint.every=0", r"checkpoint.every=0: expected an integer >= 1"),
    ("actions.heldout_fraction=1.0", "strictly between 0 and 1"),
    ("rl.policy_lr=0.0", r"rl.policy_lr=0.0: expected > 0"),
    ("rl.kl_coef=-0.1", r"rl.kl_coef=-0.1: expected >= 0"),
    ("llm.top_p=0.0", r"llm.top_p=0.0: expected a value in \(0, 1\]"),
    ("llm.prompt_buckets=()", "non-empty sequence"),
    ("llm.dtype=int16", "llm.dtype='int16': expected one of auto, float32, bfloat16, float16"),
])
def test_out_of_range_values_are_refused_before_any_work(override, message):
  with pytest.raises(EagleError, match=message):
    load_config(DEMO, [override])


def test_no_candidate_actions_is_refused():
  with pytest.raises(EagleError, match="at least one candidate action"):
    load_config(DEMO, ["actions.num_generic=0", "actions.num_personalised=0"])


def test_every_shipped_config_is_in_range():
  for spec in ("demo.py", "demo.py:smoke", "demo.py:qwen", "paper.py", "steering.py",
               "steering.py:gpu", "sweep_reference.py"):
    load_config("experiments/" + spec)


def test_unknown_variant_is_one_line():
  with pytest.raises(EagleError, match="get_config\\('smok'\\) failed: .*known: smoke"):
    load_config(DEMO + ":smok")


def test_workdir_that_is_a_file(tmp_path):
  (tmp_path / "f").write_text("")
  with pytest.raises(EagleError, match="is a file, expected a run directory"):
    load_config(DEMO, [f"workdir={str(tmp_path / 'f')!r}"])


def test_changed_keys_name_what_a_resume_would_splice():
  import json
  from eagle_jax.config import changed_keys
  saved = json.loads(load_config(DEMO).to_json())
  same_run = load_config(DEMO, ["rl.iterations=40", "checkpoint.every=5", "eval.best_of_n=4",
                                "workdir='elsewhere'", "mesh.model=2"])
  assert changed_keys(saved, same_run) == []
  other = load_config(DEMO, ["rl.kl_coef=0.5", "llm.prompt_buckets=(128, 256)"])
  assert changed_keys(saved, other) == ["llm.prompt_buckets: [128, 256, 512] -> [128, 256]",
                                        "rl.kl_coef: 0.05 -> 0.5"]
