"""Small stand-ins shared by the tests: a tiny LLM, a tiny catalogue, a canned sampler, an RL
problem, and a failing disk write. Importing this module builds nothing; each helper does."""

from __future__ import annotations

import dataclasses
import functools
import string

import jax
import numpy as np
import tokenizers
from tokenizers import decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from eagle_jax.agent import nets, rl
from eagle_jax.world.movielens import Catalogue, Ratings, Tags
from eagle_jax.llm import model as model_lib
from eagle_jax.llm.config import ModelConfig
from eagle_jax.llm.sampler import SampleOutput
from eagle_jax.llm.weights import LoadedModel

# ---- A tiny LLM ----------------------------------------------------------------------------

PAD, BOS, EOS = 0, 1, 2
CHAT_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<assistant>{% endif %}")


def char_tokenizer() -> PreTrainedTokenizerFast:
  """One token per printable character, after <pad> <bos> <eos> <unk>."""
  vocab = ["<pad>", "<bos>", "<eos>", "<unk>"] + list(string.printable[:95]) + ["\n"]
  tok = tokenizers.Tokenizer(models.WordLevel({t: i for i, t in enumerate(vocab)},
                                              unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Split(tokenizers.Regex("."), behavior="isolated")
  tok.decoder = decoders.Fuse()
  return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                 pad_token="<pad>", unk_token="<unk>")


def tiny_model(arch: str = "llama", *, eos_ids=(EOS,), chat_template=None,
               seed: int = 0) -> LoadedModel:
  """A random tiny decoder whose vocabulary is exactly the character tokenizer's."""
  tokenizer = char_tokenizer()
  config = dataclasses.replace(ModelConfig.tiny(arch), vocab_size=len(tokenizer))
  params = _init_params(config, seed)
  return LoadedModel(name=f"tiny-{arch}", config=config, params=params, tokenizer=tokenizer,
                     chat_template=chat_template, bos_id=BOS, eos_ids=tuple(eos_ids),
                     add_bos=True)


@functools.cache
def _init_params(config: ModelConfig, seed: int):
  # Jitted: flax init op by op takes seconds on a busy CPU.
  return jax.jit(model_lib.init_params, static_argnums=0)(config, jax.random.key(seed))


class CannedSampler:
  """Returns fixed texts and records how it was called (the LLM is not under test here)."""

  def __init__(self, texts, finished):
    self.texts, self.finished, self.calls = texts, finished, []

  def sample(self, prompts, **kwargs):
    self.calls.append((list(prompts), kwargs))
    n = len(prompts)
    return SampleOutput(self.texts, [[]] * n, [np.zeros(0)] * n, [1] * n, [0] * n, self.finished)


# ---- A tiny catalogue ----------------------------------------------------------------------


def tiny_catalogue(with_tags: bool = True) -> Catalogue:
  """Six movies; user 7's ratings have mean 3, so centred ratings are small integers."""
  # (movie id, rating, timestamp) of user 7; user 8 rates the opposite way.
  user7 = [(1, 5.0, 100), (2, 5.0, 200), (3, 4.0, 50), (4, 2.0, 300), (5, 1.0, 400),
           (6, 1.0, 10)]
  user8 = [(1, 1.0, 500), (5, 5.0, 600)]
  rows = [(7, *r) for r in user7] + [(8, *r) for r in user8]
  ratings = Ratings(user_ids=np.array([r[0] for r in rows], np.int64),
                    movie_ids=np.array([r[1] for r in rows], np.int64),
                    values=np.array([r[2] for r in rows], np.float32),
                    timestamps=np.array([r[3] for r in rows], np.int64))
  tag_rows = [(7, 1, "dark"), (7, 2, "Dark "), (7, 5, "twist  ending"), (7, 3, "funny"),
              (8, 5, "gory"), (8, 6, "gory"), (8, 1, "slow")]
  tags = Tags(user_ids=np.array([t[0] for t in tag_rows], np.int64),
              movie_ids=np.array([t[1] for t in tag_rows], np.int64),
              tags=[t[2] for t in tag_rows]) if with_tags else None
  return Catalogue(
      name="tiny", movie_ids=np.arange(1, 7, dtype=np.int64),
      titles=["Heat", "Alien", "Toy Story", "Notting Hill", "Saw", "Avatar"],
      years=np.array([1995, 1979, 1995, 1999, 2004, 2009], np.int32),
      genres=[("Action", "Crime", "Thriller"), ("Horror", "Sci-Fi"),
              ("Adventure", "Animation", "Children", "Comedy"), ("Comedy", "Romance"),
              ("Horror", "Thriller"), ("Action", "Sci-Fi", "IMAX")],
      ratings=ratings, tags=tags, users=None)


def torn_write(self, text, *args, **kwargs):
  """Stands in for `Path.write_text`: some bytes reach the disk, then the writer dies."""
  with open(self, "w") as f:
    f.write(text[:10])
  raise OSError("disk full")


# ---- A tiny RL problem ---------------------------------------------------------------------


def rl_problem():
  """A small RL update problem, identical on every process (fixed seeds)."""
  cfg = rl.RLConfig(scorer=nets.ActionScorer(hidden=8, num_steps=3),
                    value_net=nets.ValueNet(hidden=8, num_steps=3), kl_coef=0.1,
                    entropy_coef=0.01)
  rs = np.random.default_rng(0)
  # Shapes only (no compile), filled from numpy: the same params on every process.
  shapes = jax.eval_shape(lambda key: {
      "policy": nets.init_policy(key, cfg.scorer, state_dim=4, user_dim=2, action_dim=3),
      "value": nets.init_value(key, cfg.value_net, state_dim=4, user_dim=2)},
      jax.random.key(0))
  params = jax.tree.map(lambda x: 0.5 * rs.normal(size=x.shape).astype(x.dtype), shapes)
  b, h, k = 8, 3, 4
  f32 = lambda *shape: rs.normal(size=shape).astype(np.float32)
  episodes = rl.Batch(states=f32(b, h, 4), final_states=f32(b, 4), users=f32(b, 2),
                      actions=f32(b, h, k, 3), masks=np.ones((b, h, k), bool),
                      chosen=rs.integers(0, k, size=(b, h)).astype(np.int32),
                      rewards=np.concatenate([np.zeros((b, h - 1)), f32(b, 1)], 1)
                      .astype(np.float32),
                      ref_logits=f32(b, h, k))
  return cfg, params, episodes, rl.make_optimizer(1e-2, 1e-2)


def flat_params(params) -> np.ndarray:
  """All leaves of a (replicated, possibly multi-host) params tree as one host vector."""
  host = lambda x: x.addressable_shards[0].data if isinstance(x, jax.Array) else x
  return np.concatenate([np.asarray(host(x)).ravel() for x in jax.tree.leaves(params)])
