"""The prepared EAGLE world: catalogue, latent space Z, encoder E_D and utility, from a run dir.

`prepare(config)` builds it stage by stage, reusing each stage while its fingerprint matches
the config (`run_folder`); every later stage of the loop starts from `load(config)`, which
builds nothing and refuses a missing or stale world in one line.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from eagle_jax.run import artifacts, folder as run_folder
from eagle_jax.world.descriptions import Descriptions, load_descriptions, split_plot
from eagle_jax.world.movielens import Catalogue, load_catalogue
from eagle_jax.errors import EagleError
from eagle_jax.world import als, regression_head, utility


# E_D's head runs at every environment step: compiled once, not dispatched op by op.
_apply_head = jax.jit(regression_head.apply_head)


@dataclasses.dataclass
class World:
  """Everything the EAGLE loop needs from the domain, indexed by `items` (modelled movies)."""
  config: object
  workdir: pathlib.Path
  catalogue: Catalogue
  descriptions: Descriptions
  user_ids: np.ndarray          # [U] MovieLens user ids, row order of user_z
  user_z: np.ndarray            # [U, d] ALS user factors
  items: np.ndarray             # [N] catalogue rows of the modelled movies (enough ratings + text)
  item_z: np.ndarray            # [N, d] their ALS factors: the utility's catalogue
  text_emb: np.ndarray          # [N, 384] MiniLM embeddings of their descriptions
  head_params: dict
  metrics: dict

  @functools.cached_property
  def encoder(self):
    from eagle_jax.world.text_encoder import TextEncoder
    return TextEncoder.load(self.config.encoder.model, max_length=self.config.encoder.max_length)

  def embed_text(self, texts: list[str]) -> np.ndarray:
    return embed_descriptions(self.encoder, texts, self.config)

  def latent_of_embedding(self, emb: np.ndarray) -> np.ndarray:
    """E_D's head: text embedding -> latent z."""
    return np.asarray(_apply_head(self.head_params, jnp.asarray(emb)))

  def text(self, item: int) -> str:
    return self.descriptions.texts[int(self.catalogue.movie_ids[self.items[item]])]

  def title(self, item: int) -> str:
    return self.catalogue.display_title(int(self.items[item]))

  def user_row(self, user_id: int) -> int:
    rows = np.flatnonzero(self.user_ids == user_id)
    if not rows.size:
      raise EagleError(f"user {user_id} is not in the latent space "
                       f"(known ids {self.user_ids.min()}..{self.user_ids.max()})")
    return int(rows[0])

  def item_of_query(self, query: str) -> int:
    row = self.catalogue.find_movie(query)
    found = np.flatnonzero(self.items == row)
    if not found.size:
      raise EagleError(f"movie {query!r} is not modelled (it needs >= "
                       f"{self.config.data.min_ratings_per_movie} ratings and a description)")
    return int(found[0])

  def utility_fn(self):
    """U(z; u, anchor) as a jitted function of batches (z [B, d], user_z [B, d], anchor
    items [B]), with the config's utility settings and this world's catalogue."""
    cfg = self.config.utility
    catalogue_z = jnp.asarray(self.item_z)
    exclude = cfg.exclude_anchor

    @jax.jit
    def fn(z, user_z, anchor):
      return utility.batched_utility(z, user_z, catalogue_z, lam=cfg.lam, k=cfg.k, cap=cfg.cap,
                                     exclude_index=jnp.where(exclude, anchor, -1))
    return fn


def embed_descriptions(encoder, texts: list[str], config, progress: bool = False) -> np.ndarray:
  """E_D's text embedding (unit norm). With config.encoder.plot_weight w > 0 a description's
  fields and its plot are embedded on their own and mixed, unit((1 - w) fields + w plot):
  one mean pool over both dilutes the genre and tag words that carry most of the behavioural
  signal (DESIGN.md, rule 3). A text without a plot is its fields."""
  c = config.encoder
  if not c.plot_weight:
    return encoder.encode(texts, batch_size=c.batch_size, progress=progress)
  if not 0 < c.plot_weight < 1:
    raise EagleError(f"config.encoder.plot_weight={c.plot_weight}: expected 0 (one embedding "
                     "of the whole text) or a weight in (0, 1)")
  parts = [split_plot(t) for t in texts]
  # Rewrites keep their anchor's fields: embed each distinct fields text once.
  unique = {f: i for i, f in enumerate(dict.fromkeys(f for f, _ in parts))}
  field_emb = encoder.encode(list(unique), batch_size=c.batch_size, progress=progress)
  emb = field_emb[[unique[f] for f, _ in parts]]
  has_plot = [i for i, (_, p) in enumerate(parts) if p]
  if has_plot:
    plot_emb = encoder.encode([parts[i][1] for i in has_plot], batch_size=c.batch_size,
                              progress=progress)
    mixed = (1 - c.plot_weight) * emb[has_plot] + c.plot_weight * plot_emb
    emb[has_plot] = mixed / np.linalg.norm(mixed, axis=1, keepdims=True)
  return emb


def _log(verbose, msg):
  if verbose:
    print(msg, flush=True)


def prepare(config, verbose: bool = False, build: bool = True) -> World:
  """Runs (or reuses) the latent-space and encoder stages and returns the prepared world;
  with build=False a stage that is not current is an error instead."""
  folder = run_folder.RunFolder(config)
  workdir = folder.root
  if not build:  # A misspelt --workdir fails before the catalogue is read.
    folder.require("latent")
  catalogue = load_catalogue(config.data.source)
  _log(verbose, f"data: {catalogue.name}: {catalogue.num_movies} movies, {catalogue.num_users} "
       f"users, {len(catalogue.ratings.values)} ratings")

  # Read before any fitting: a missing or malformed descriptions file fails in a second.
  descriptions = load_descriptions(config.data.descriptions, catalogue, config.data.num_tags,
                                   workdir)

  def current(stage, content=None):
    if folder.is_current(stage, content):
      return True
    if not build:
      folder.require(stage, content)
    return False

  # Stage 1: the behavioural latent space.
  if not current("latent"):
    _fit_latent(config, catalogue, folder, verbose)
  latent = artifacts.read_npz(folder.data("latent"))
  latent_metrics = folder.recorded("latent")
  _log(verbose, _format_latent(latent_metrics))

  has_text = np.array([int(m) in descriptions.texts for m in catalogue.movie_ids])
  enough = catalogue.rating_counts() >= config.data.min_ratings_per_movie
  items = np.flatnonzero(enough & has_text)
  if items.size < 10:
    raise EagleError(f"only {items.size} movies have >= {config.data.min_ratings_per_movie} "
                     "ratings and a description; lower config.data.min_ratings_per_movie")
  _log(verbose, f"descriptions ({descriptions.source}): {int(enough.sum())} movies with >= "
       f"{config.data.min_ratings_per_movie} ratings, {int((enough & ~has_text).sum())} of them "
       f"without text (excluded) -> {items.size} modelled movies")
  item_rows = np.searchsorted(latent["movie_ids"], catalogue.movie_ids[items])
  item_z = latent["item_factors"][item_rows]

  # Stage 2: frozen text embeddings of the descriptions (their text is part of the key).
  texts = [descriptions.texts[int(catalogue.movie_ids[i])] for i in items]
  text_key = artifacts.fingerprint(texts)
  if not current("text", text_key):
    from eagle_jax.world.text_encoder import TextEncoder
    encoder = TextEncoder.load(config.encoder.model, max_length=config.encoder.max_length)
    emb = embed_descriptions(encoder, texts, config, progress=verbose)
    artifacts.write_npz(folder.data("text"), movie_ids=catalogue.movie_ids[items],
                        embeddings=emb)
    folder.write_manifest("text", {"num_texts": len(texts),
                                   "missing_text": len(descriptions.missing)}, text_key)
  text = artifacts.read_npz(folder.data("text"))

  # Stage 3: E_D's regression head, evaluated on movies it never saw.
  if not current("ed_head"):
    _fit_head(config, text["embeddings"], item_z, latent, folder, verbose)
  head_params = regression_head.load_head(folder.data("ed_head"))
  head_metrics = folder.recorded("ed_head")
  _log(verbose, _format_head(head_metrics))

  return World(config=config, workdir=workdir, catalogue=catalogue, descriptions=descriptions,
                  user_ids=latent["user_ids"], user_z=latent["user_factors"], items=items,
                  item_z=item_z, text_emb=text["embeddings"], head_params=head_params,
                  metrics={"latent": latent_metrics, "ed_head": head_metrics})


def load(config) -> World:
  """The prepared world of a finished, current `prepare`."""
  return prepare(config, build=False)


def _fit_latent(config, catalogue, folder, verbose):
  r = catalogue.ratings
  user_ids, user_idx = np.unique(r.user_ids, return_inverse=True)
  movie_ids = catalogue.movie_ids
  item_idx = np.searchsorted(movie_ids, r.movie_ids)
  c = config.als
  hyper = dict(dim=c.dim, reg=c.reg, iterations=c.iterations, implicit=c.implicit,
               alpha=c.alpha, seed=config.seed)
  train, test = als.split_ratings(user_idx, item_idx, r.values, c.test_fraction, config.seed)
  _log(verbose, f"ALS on {len(train[0])} train ratings (held out {len(test[0])})")
  model = als.fit_als(*train, len(user_ids), len(movie_ids), progress=verbose, **hyper)
  metrics = als.evaluate_als(model, train, test, k=c.recall_k, progress=verbose)
  # The artefact is refit on every rating: the split only measures generalisation.
  model = als.fit_als(user_idx, item_idx, r.values, len(user_ids), len(movie_ids),
                      progress=verbose, **hyper)
  artifacts.write_npz(folder.data("latent"), user_ids=user_ids, movie_ids=movie_ids,
                      user_factors=model.user_factors, item_factors=model.item_factors)
  folder.write_manifest("latent", {**metrics, **hyper})


def _fit_head(config, emb, item_z, latent, folder, verbose):
  c = config.encoder
  rng = np.random.default_rng(config.seed)
  order = rng.permutation(len(emb))
  n_test = max(1, int(round(c.test_fraction * len(emb))))
  test, train = order[:n_test], order[n_test:]
  hyper = dict(hidden=c.head_hidden, lr=c.head_lr, steps=c.head_steps,
               weight_decay=c.head_weight_decay,
               hidden_weight_decay=c.head_hidden_weight_decay, seed=config.seed)
  params, _ = regression_head.fit_head(emb[train], item_z[train], progress=verbose, **hyper)
  metrics = {f"heldout_{k}": v for k, v in
             regression_head.evaluate_head(params, emb[test], item_z[test]).items()}
  pred = np.asarray(_apply_head(params, jnp.asarray(emb[test])))
  metrics["heldout_user_corr"] = user_rank_correlation(latent["user_factors"], pred, item_z[test])
  metrics.update(num_train_movies=int(train.size), num_test_movies=int(test.size))
  # The artefact head is refit on every modelled movie; the metrics above are held-out.
  params, _ = regression_head.fit_head(emb, item_z, progress=verbose, **hyper)
  regression_head.save_head(folder.data("ed_head"), params)
  folder.write_manifest("ed_head", {**metrics, **hyper})


def user_rank_correlation(user_z, pred_z, true_z) -> float:
  """Mean over users of corr(<z_u, E_D(x_m)>, <z_u, z_m>) over movies: does the reward rank
  right?"""
  a = user_z @ pred_z.T
  b = user_z @ true_z.T
  a = a - a.mean(1, keepdims=True)
  b = b - b.mean(1, keepdims=True)
  denom = np.sqrt((a * a).sum(1) * (b * b).sum(1))
  ok = denom > 1e-12
  return float(((a * b).sum(1)[ok] / denom[ok]).mean())


def _format_latent(m) -> str:
  k = next(key.split("@")[1] for key in m if key.startswith("recall@"))
  return (f"latent space (ALS d={m['dim']}, reg={m['reg']}): held-out RMSE {m['rmse']:.3f} "
          f"(global mean {m['global_mean_rmse']:.3f}); recall@{k} {m[f'recall@{k}']:.3f} "
          f"vs popularity {m[f'popularity_recall@{k}']:.3f}")


def _format_head(m) -> str:
  return (f"encoder E_D on {m['num_test_movies']} held-out movies: R^2 {m['heldout_r2']:.3f}, "
          f"cosine {m['heldout_cosine']:.3f}, user rank corr {m['heldout_user_corr']:.3f}")


def summary(p: World) -> str:
  return (f"prepared {p.items.size} movies x {p.user_ids.size} users in a {p.item_z.shape[1]}-d "
          f"latent space; artefacts in {p.workdir}")
