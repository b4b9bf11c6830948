"""The `describe` stage and the one description format: fields kept, LLM prose after them."""

from __future__ import annotations

import csv
import gzip
import pathlib

import numpy as np
import pytest

from eagle_jax import distributed
from eagle_jax.environment import rewrite as env
from eagle_jax.world import describe, prepared
from eagle_jax.config import load_config
from eagle_jax.world import descriptions
from eagle_jax.errors import EagleError
from eagle_jax.llm import sampler as sampler_lib
from tests.fakes import CannedSampler

FIELDS = {1: "Toy Story (1995). Genres: Animation. Tags: pixar.",
          2: "Heat (1995). Genres: Crime.", 3: "Up (2009). Genres: Animation.",
          4: "Alien (1979). Genres: Horror.", 5: "Big (1988). Genres: Comedy."}


@pytest.fixture
def config():
  config = load_config("experiments/demo.py:smoke")
  with config.unlocked():
    config.describe.batch_size = 2
  return config


class _Generator:
  """Writes "Plot of <fields>." for each prompt; can be told to fail on the n-th call."""

  def __init__(self, fail_on_call=None, answer=None):
    self.calls, self.fail_on_call = [], fail_on_call
    self.answer = answer or (lambda p: f"Here is the description: {p.split(': ', 1)[1][:9]} "
                             "is a fine movie.")

  def __call__(self, prompts):
    self.calls.append(list(prompts))
    if len(self.calls) == self.fail_on_call:
      raise KeyboardInterrupt
    return describe.Generated(texts=[self.answer(p) for p in prompts],
                              finished=[True] * len(prompts), tokens=7 * len(prompts))


def _read(path):
  with open(path, newline="") as f:
    return {int(r["movieId"]): r["description"] for r in csv.DictReader(f)}


def test_format_round_trips():
  text = descriptions.with_plot(FIELDS[1], "A cowboy doll is jealous. It is funny.")
  assert text == ("Toy Story (1995). Genres: Animation. Tags: pixar. Plot: A cowboy doll is "
                  "jealous. It is funny.")
  assert descriptions.split_plot(text) == (FIELDS[1], "A cowboy doll is jealous. It is funny.")
  assert descriptions.split_plot(FIELDS[2]) == (FIELDS[2], "")
  assert descriptions.with_plot(FIELDS[2], "  ") == FIELDS[2]
  assert descriptions.breaks_format("A heist. Genres: Crime.")
  assert not descriptions.breaks_format("A heist in the genre of crime.")


def test_describe_writes_every_movie_in_one_format(config, tmp_path):
  generate = _Generator(answer=lambda p: ("Genres: Crime. Plot: a heist." if "Heat" in p
                                          else "" if "Alien" in p else "It is a fine movie."))
  meta = describe.describe(config, FIELDS, generate, tmp_path, progress=False)
  texts = _read(tmp_path / describe.DESCRIPTIONS_CSV)
  assert texts[1] == f"{FIELDS[1]} Plot: It is a fine movie."
  assert texts[2] == FIELDS[2] and texts[4] == FIELDS[4]  # Degenerate: the fields alone.
  assert meta["degenerate_by_reason"] == {"empty": 1, "format": 1}
  assert meta["tokens"] == 35 and meta["movies"] == 5
  # The prompt shows the fields; batches are fixed runs of the sorted ids.
  assert [len(c) for c in generate.calls] == [2, 2, 1]
  assert generate.calls[0][0] == config.describe.prompt.format(fields=FIELDS[1])
  assert not (tmp_path / "describe.partial.jsonl").exists()


def test_describe_resumes_and_reuses_until_an_input_changes(config, tmp_path):
  with pytest.raises(KeyboardInterrupt):
    describe.describe(config, FIELDS, _Generator(fail_on_call=2), tmp_path, progress=False)
  assert not (tmp_path / describe.DESCRIPTIONS_CSV).exists()  # Nothing half-written.
  resumed = _Generator()
  describe.describe(config, FIELDS, resumed, tmp_path, progress=False)
  assert [c[0] for c in resumed.calls] == [config.describe.prompt.format(fields=FIELDS[3]),
                                           config.describe.prompt.format(fields=FIELDS[5])]
  first = _read(tmp_path / describe.DESCRIPTIONS_CSV)
  uninterrupted = tmp_path / "other"
  describe.describe(config, FIELDS, _Generator(), uninterrupted, progress=False)
  assert _read(uninterrupted / describe.DESCRIPTIONS_CSV) == first

  describe.describe(config, FIELDS, None, tmp_path, progress=False)  # Cached: no LLM needed.
  # The environment LLM and the seed do not change the catalogue's text.
  same = load_config("experiments/demo.py:smoke", ["llm.model='gemma3-270m'", "seed=3",
                                                   "describe.batch_size=2"])
  describe.describe(same, FIELDS, None, tmp_path, progress=False)
  for change in ("describe.model='gemma3-270m'", "describe.max_new_tokens=9",
                 "describe.prompt='Facts: {fields}. Describe it.'", "llm.dtype='bfloat16'"):
    changed = load_config("experiments/demo.py:smoke", [change, "describe.batch_size=2"])
    with pytest.raises(EagleError, match="needs the LLM"):
      describe.describe(changed, FIELDS, None, tmp_path, progress=False)
  with pytest.raises(EagleError, match="needs the LLM"):
    describe.describe(config, {**FIELDS, 6: "New (2020)."}, None, tmp_path, progress=False)


def test_shipped_descriptions_are_used_when_their_fingerprint_matches(config, tmp_path,
                                                                     monkeypatch):
  monkeypatch.setattr(describe, "_SHIPPED_DIR", tmp_path / "package")
  made = tmp_path / "made"
  meta = describe.describe(config, FIELDS, _Generator(), made, progress=False)
  shipped = describe.ship(made, meta["fingerprint"])
  assert shipped.parent == tmp_path / "package" and shipped.name.endswith(".csv.gz")
  fresh = tmp_path / "fresh"
  meta = describe.describe(config, FIELDS, None, fresh, progress=False)
  assert meta["source"].startswith("shipped")
  assert (fresh / describe.DESCRIPTIONS_CSV).read_bytes() == \
      (made / describe.DESCRIPTIONS_CSV).read_bytes()
  regenerated = _Generator()
  describe.describe(config, FIELDS, regenerated, fresh, regenerate=True, progress=False)
  assert regenerated.calls


def test_bad_prompt_is_a_user_error(config, tmp_path):
  with config.unlocked():
    config.describe.prompt = "Describe this movie."
  with pytest.raises(EagleError, match="must contain {fields}"):
    describe.describe(config, FIELDS, _Generator(), tmp_path, progress=False)


def test_described_environment_keeps_the_fields():
  entity = descriptions.with_plot(FIELDS[2], "A crew robs a bank in Los Angeles.")
  canned = CannedSampler(["Sure! Here is the new plot: A crew robs a bank on the Moon.",
                           "Heat (1995). Genres: Sci-Fi. Plot: A crew robs a bank on Mars."],
                          [True, True])
  environment = env.EnvironmentLLM(canned, prompt_template=env.DEFAULT_PROMPT_TEMPLATE,
                                   max_new_tokens=48, strategy=sampler_lib.Greedy(),
                                   keep_fields=True)
  result = environment.rewrite([entity, entity], ["set it in space", "set it on Mars"])
  assert result.texts == [f"{FIELDS[2]} Plot: A crew robs a bank on the Moon.", entity]
  assert result.degenerate == [None, "format"]
  assert entity in canned.calls[0][0][0]  # The LLM reads the whole description.


class _FakeEncoder:
  """Hashes each text to a fixed random unit vector; counts the texts it encodes."""

  def __init__(self):
    self.encoded = []

  def encode(self, texts, batch_size=64, progress=False):
    self.encoded += list(texts)
    out = [np.random.default_rng(sum(map(ord, t))).normal(size=8) for t in texts]
    return np.array([v / np.linalg.norm(v) for v in out], np.float32)


def test_ed_embeds_fields_and_plot_apart(config):
  texts = [descriptions.with_plot(FIELDS[1], "A doll."), descriptions.with_plot(FIELDS[1],
                                                                                "A robot."),
           FIELDS[2]]
  encoder = _FakeEncoder()
  with config.unlocked():
    config.encoder.plot_weight = 0.25
  emb = prepared.embed_descriptions(encoder, texts, config)
  assert encoder.encoded == [FIELDS[1], FIELDS[2], "A doll.", "A robot."]  # Fields once.
  f1, f2, doll, robot = _FakeEncoder().encode([FIELDS[1], FIELDS[2], "A doll.", "A robot."])
  want = 0.75 * f1 + 0.25 * doll
  np.testing.assert_allclose(emb[0], want / np.linalg.norm(want), rtol=1e-5)
  np.testing.assert_allclose(emb[2], f2, rtol=1e-6)
  assert not np.allclose(emb[0], emb[1])
  with config.unlocked():
    config.encoder.plot_weight = 0.0
  np.testing.assert_array_equal(prepared.embed_descriptions(_FakeEncoder(), texts, config),
                                _FakeEncoder().encode(texts))
  with config.unlocked():
    config.encoder.plot_weight = 1.5
  with pytest.raises(EagleError, match="plot_weight=1.5"):
    prepared.embed_descriptions(_FakeEncoder(), texts, config)


def test_prepare_asks_for_describe_first(config, tmp_path):
  with config.unlocked():
    config.workdir = str(tmp_path)
    config.data.descriptions = "described"
  with pytest.raises(EagleError, match="eagle_jax describe"):
    prepared.prepare(config)


def test_shipped_descriptions_of_the_demo_config_exist_and_are_in_the_format():
  config = load_config("experiments/demo.py")
  from eagle_jax.world.movielens import load_catalogue
  fields = describe.movie_fields(load_catalogue(config.data.source),
                                 config.data.min_ratings_per_movie, config.data.num_tags)
  path = describe.shipped_path(describe.fingerprint(config, fields))
  assert path.exists(), f"{path.name}: regenerate with `describe --regenerate --ship`"
  with gzip.open(path, "rt", newline="") as f:
    texts = {int(r["movieId"]): r["description"] for r in csv.DictReader(f)}
  assert sorted(texts) == sorted(fields)
  split = {m: descriptions.split_plot(t) for m, t in texts.items()}
  assert all(split[m][0] == fields[m] for m in fields)
  with_plot = sum(bool(p) for _, p in split.values())
  assert with_plot >= 0.8 * len(fields), f"only {with_plot} of {len(fields)} have a plot"


@pytest.mark.slow
def test_smollm2_regenerates_the_shipped_descriptions_exactly(tmp_path):
  """The first batch of the shipped file, written again by the real model."""
  from eagle_jax.world.movielens import load_catalogue
  from eagle_jax.llm.weights import load_model
  config = load_config("experiments/demo.py")
  fields = describe.movie_fields(load_catalogue(config.data.source),
                                 config.data.min_ratings_per_movie, config.data.num_tags)
  path = describe.shipped_path(describe.fingerprint(config, fields))
  with gzip.open(path, "rt", newline="") as f:
    shipped = {int(r["movieId"]): r["description"] for r in csv.DictReader(f)}
  first = dict(sorted(fields.items())[:config.describe.batch_size])
  # One device, as `describe` runs on this machine without the tests' 8 fake devices.
  sampler = sampler_lib.Sampler(load_model(config.describe.model, dtype=config.llm.dtype),
                                batch_size=config.describe.batch_size,
                                buckets=tuple(config.llm.prompt_buckets),
                                mesh=distributed.make_mesh(1))

  def generate(prompts):
    out = sampler.sample(prompts, max_new_tokens=config.describe.max_new_tokens,
                         strategy=sampler_lib.Greedy())
    return describe.Generated(out.texts, out.finished, out.tokens)

  # describe() itself, on the first batch: the fingerprint differs, so nothing is reused.
  describe.describe(config, first, generate, tmp_path, progress=False)
  regenerated = _read(pathlib.Path(tmp_path) / describe.DESCRIPTIONS_CSV)
  assert regenerated == {m: shipped[m] for m in first}
