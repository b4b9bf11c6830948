"""What the policy, reference and value networks see of a state, a user and a candidate.

* state x_t: the MiniLM embedding of the description and its E_D latent z_t;
* user u: the ALS factor z_u;
* candidate a: the MiniLM embedding of the action text, plus E_D's reading of the *literal
  edit*: z_hat = E_D(unit(emb(x_t) + emb(a))), the latent of a text that says both what the
  description says and what the action asks for. The candidate carries z_hat - z_t and
  z_u * (z_hat - z_t), each scaled to unit RMS norm over the state's candidates, and its
  predicted utility gain U(z_hat) - U(z_t), standardised over the state's candidates (a
  rank-like score of unit scale: Adam moves every weight by about the learning rate, so a
  feature of scale 0.1 would need 10x the updates to matter).

Why the edit features: the policy must generalise to movies and users it never trained on
from a few hundred episodes. A 384-d action embedding alone makes it learn, from scratch,
how text moves the latent space; z_hat hands it a cheap first guess, and RL learns how much
to trust it. The guess is only as good as the environment is obedient: with SmolLM2 it
correlates 0.1-0.2 with the real one-step utility (`design` prints this "steerability").
The real next state is only known after the environment LLM rewrites.
"""

from __future__ import annotations

import numpy as np


def state_features(world, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(features [N, 384 + d], z [N, d]): a state is its text embedding and its E_D latent."""
  z = world.latent_of_embedding(emb)
  return np.concatenate([emb, z], axis=-1).astype(np.float32), z


def user_features(world, table) -> np.ndarray:
  """[A, d]: the ALS factor of each anchor's user."""
  return world.user_z[[world.user_row(u) for u in table.user_ids]]


def candidate_features(world, utility, emb: np.ndarray, z: np.ndarray, users: np.ndarray,
                       anchor_items: np.ndarray, action_emb: np.ndarray,
                       mask: np.ndarray) -> np.ndarray:
  """[B, K, d_a + 2 d + 1] features of each state's K candidates (zeros where masked).

  Args:
    world: the prepared `World` (E_D's head).
    utility: `world.utility_fn()`, U(z; u, anchor) batched over rows.
    emb: [B, d_e] text embeddings of the current states; z: [B, d] their latents.
    users: [B, d] user factors; anchor_items: [B] the anchor movie (kNN exclusion).
    action_emb: [B, K, d_a] candidate embeddings; mask: [B, K] valid candidates.
  """
  B, K, _ = action_emb.shape
  mixed = emb[:, None, :] + action_emb
  mixed /= np.maximum(np.linalg.norm(mixed, axis=-1, keepdims=True), 1e-6)
  z_hat = world.latent_of_embedding(mixed.reshape(B * K, -1).astype(np.float32))
  rows = np.repeat(np.arange(B), K)
  u_hat = np.asarray(utility(z_hat, users[rows], anchor_items[rows])[0]).reshape(B, K)
  u_now = np.asarray(utility(z, users, anchor_items)[0])
  shift = z_hat.reshape(B, K, -1) - z[:, None, :]
  feats = np.concatenate([action_emb, unit_rms(shift, mask),
                          unit_rms(users[:, None, :] * shift, mask),
                          standardise(u_hat - u_now[:, None], mask)[..., None]], axis=-1)
  return np.where(mask[..., None], feats, 0.0).astype(np.float32)


def initial_features(world, table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(states [A, d_s], users [A, d_u], candidates [A, K, d_c]) at every anchor's x_0."""
  emb = world.text_emb[table.items]
  states, z = state_features(world, emb)
  users = user_features(world, table)
  return states, users, candidate_features(world, world.utility_fn(), emb, z, users,
                                           table.items, table.action_emb, table.mask)


def unit_rms(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """x [B, K, d] divided by the root-mean-square norm of each row's valid candidates.

  The latent shifts are ~0.1 long where the action embedding is 1: scaled to unit norm, every
  feature block starts on an equal footing, and only the candidates' relative sizes (what a
  choice within the state depends on) remain."""
  sq = np.where(mask, np.sum(x * x, axis=-1), 0.0).sum(-1) / np.maximum(mask.sum(-1), 1)
  return x / np.maximum(np.sqrt(sq), 1e-8)[:, None, None]


def standardise(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """x [B, K] z-scored over each row's valid entries (0 where a row has no spread)."""
  n = np.maximum(mask.sum(-1, keepdims=True), 1)
  mean = np.where(mask, x, 0.0).sum(-1, keepdims=True) / n
  centred = np.where(mask, x - mean, 0.0)
  std = np.sqrt((centred ** 2).sum(-1, keepdims=True) / n)
  return np.where(std > 1e-8, centred / np.maximum(std, 1e-8), 0.0)


def steerability(predicted: np.ndarray, actual: np.ndarray, mask: np.ndarray) -> dict:
  """How much the action matters one step ahead, and how well a feature predicts it.

  Args:
    predicted: [A, K] a per-candidate score (e.g. the standardised predicted gain).
    actual: [A, K] the real one-step utility of each candidate (the design's rollouts).
    mask: [A, K] valid candidates.

  Returns the mean over anchors of: `oracle_gain`, max - mean of the real utility (what
  knowing the outcome is worth over a random pick); `predicted_gain`, the real utility of
  the predicted best minus the mean; `correlation`, the within-anchor Pearson correlation.
  """
  oracle, chosen, corr = [], [], []
  for p, u, m in zip(predicted, actual, mask):
    p, u = p[m], u[m]
    oracle.append(u.max() - u.mean())
    chosen.append(u[np.argmax(p)] - u.mean())
    if p.std() > 1e-6 and u.std() > 1e-6:  # Else undefined (every rewrite rejected: x_0 kept,
      # its utility equal up to float32 rounding).
      corr.append(np.corrcoef(p, u)[0, 1])
  return {"oracle_gain": float(np.mean(oracle)), "predicted_gain": float(np.mean(chosen)),
          "correlation": float(np.mean(corr)) if corr else float("nan")}


def fitted_predictor_gain(candidates: np.ndarray, actual: np.ndarray, mask: np.ndarray,
                          groups: np.ndarray, folds: int = 8,
                          ridges=(1e-1, 1.0, 1e1, 1e2, 1e3, 1e4)) -> dict:
  """What the policy's candidate features can earn one step ahead on movies they were not
  fit on: the ceiling of a learner that reads them linearly, beside `steerability`'s single
  predicted-gain feature.

  A ridge regression of each anchor's one-step utility on its candidates' features (both
  centred within the anchor: only the choice among candidates matters) is fit on the other
  movies' anchors (`folds` folds grouped by movie), its ridge picked by the same grouped
  cross-validation inside the training movies. Grouping by movie matters: anchors of one
  movie share text and candidates, so a per-anchor split would score memorisation.

  Args: candidates [A, K, F] features, actual [A, K] real one-step utilities, mask [A, K],
  groups [A] the anchor's movie. Returns {fitted_gain: mean real utility of the held-out
  top-scored candidate minus the anchor's mean (NaN with fewer than 2 movies),
  fitted_correlation: mean within-anchor correlation of held-out scores and utility,
  fitted_ridge: median chosen ridge}.
  """
  X, y = _centre(candidates.astype(np.float64), mask), _centre(actual.astype(np.float64), mask)
  fold = _group_folds(groups, folds)
  if len(np.unique(fold)) < 2:
    nan = float("nan")
    return {"fitted_gain": nan, "fitted_correlation": nan, "fitted_ridge": nan}
  scores, chosen_ridges = np.zeros(actual.shape), []
  for f in np.unique(fold):
    train, test = fold != f, fold == f
    ridge = _best_ridge(X[train], y[train], mask[train], groups[train], ridges)
    scores[test] = X[test] @ _ridge_weights(X[train][mask[train]], y[train][mask[train]], ridge)
    chosen_ridges.append(ridge)
  steer = steerability(scores, actual, mask)
  return {"fitted_gain": steer["predicted_gain"], "fitted_correlation": steer["correlation"],
          "fitted_ridge": float(np.median(chosen_ridges))}


def _centre(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """x [A, K, ...] minus each anchor's mean over its valid candidates; 0 where masked."""
  w = mask.reshape(mask.shape + (1,) * (x.ndim - 2)).astype(x.dtype)
  mean = (x * w).sum(1, keepdims=True) / np.maximum(w.sum(1, keepdims=True), 1)
  return (x - mean) * w


def _group_folds(groups: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
  """[A] fold of each anchor: whole groups (movies) to a fold, in a seeded random order."""
  names, index = np.unique(groups, return_inverse=True)
  order = np.random.default_rng(seed).permutation(len(names))
  return (order % min(folds, len(names)))[index]


def _ridge_weights(X: np.ndarray, y: np.ndarray, ridge: float) -> np.ndarray:
  """argmin_w |Xw - y|^2 + ridge |w|^2 in the dual form (far fewer rows than features)."""
  return X.T @ np.linalg.solve(X @ X.T + ridge * np.eye(len(X)), y)


def _best_ridge(X: np.ndarray, y: np.ndarray, mask: np.ndarray, groups: np.ndarray,
                ridges) -> float:
  """The ridge with the lowest grouped cross-validated squared error (5 folds at most)."""
  fold = _group_folds(groups, 5)
  if len(np.unique(fold)) < 2:
    return float(np.median(ridges))
  errors = []
  for ridge in ridges:
    error = 0.0
    for f in np.unique(fold):
      train, test = (fold != f)[:, None] & mask, (fold == f)[:, None] & mask
      error += np.sum((X[test] @ _ridge_weights(X[train], y[train], ridge) - y[test]) ** 2)
    errors.append(error)
  return float(ridges[int(np.argmin(errors))])


def action_identification(rewrite_emb: np.ndarray, action_emb: np.ndarray,
                          mask: np.ndarray) -> dict:
  """How often a rewrite's nearest action text (cosine, among its anchor's candidates) is the
  action that produced it: whether the environment follows edits at all.

  Args: rewrite_emb [A, K, d] embeddings of candidate k's one-step rewrite; action_emb
  [A, K, d] of the action texts; mask [A, K]. Returns {identification, chance}.
  """
  unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-9)  # noqa: E731
  sims = np.einsum("akd,ajd->akj", unit(rewrite_emb), unit(action_emb))
  sims = np.where(mask[:, None, :], sims, -np.inf)
  hits = sims.argmax(-1) == np.arange(mask.shape[1])[None, :]
  return {"identification": float(hits[mask].mean()),
          "chance": float(np.mean(1.0 / mask.sum(-1)))}


# A meaning-preserving edit: E_D should barely move under it, compared with a real edit.
PARAPHRASE = "say the same thing in other words, keeping every event, character and the tone"


def paraphrase_stability(z0: np.ndarray, z_paraphrase: np.ndarray, paraphrased: np.ndarray,
                         z_next: np.ndarray, edited: np.ndarray) -> dict:
  """How far E_D's latent moves under a paraphrase compared with under a real edit.

  Args: z0 [A, d] each anchor's latent; z_paraphrase [A, d] after a `PARAPHRASE` rewrite,
  `paraphrased` [A] whether that rewrite was usable (a rejected one did not move);
  z_next [A, K, d] after each candidate edit; `edited` [A, K] the valid candidates whose
  rewrite was usable (rejected ones kept x_0 and did not move either).
  Returns medians of the L2 moves and their ratio (paraphrase / edit; 1 = E_D cannot tell
  a paraphrase from an edit), plus how many paraphrases and edits were usable.
  """
  median = lambda x: float(np.median(x)) if x.size else float("nan")  # noqa: E731
  para_move = median(np.linalg.norm(z_paraphrase - z0, axis=-1)[paraphrased])
  edit_move = median(np.linalg.norm(z_next - z0[:, None], axis=-1)[edited])
  return {"paraphrase_move": para_move, "edit_move": edit_move,
          "paraphrase_edit_ratio": para_move / edit_move if edit_move > 0 else float("nan"),
          "paraphrases_usable": int(paraphrased.sum()), "edits_usable": int(edited.sum())}


def feature_dims(world, table) -> dict[str, int]:
  """Input sizes of the scorer and value networks."""
  return dims_of(text_dim=world.text_emb.shape[1], latent_dim=world.item_z.shape[1])


def dims_of(text_dim: int, latent_dim: int) -> dict[str, int]:
  """Input sizes of the networks for text embeddings and latents (users' and movies') of
  these sizes: what `feature_dims` reads off a prepared world, known from a config alone."""
  return dict(state_dim=text_dim + latent_dim, user_dim=latent_dim,
              action_dim=text_dim + 2 * latent_dim + 1)
