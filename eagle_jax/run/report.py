"""The per-run PNG report: learning curves, policy comparison, and trajectories in latent space."""

from __future__ import annotations


import matplotlib

matplotlib.use("Agg")  # Headless: the report is a file.
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from eagle_jax.run import artifacts

# Training utility first (is it rising?), and the raw mean advantage beside the value loss:
# a value head lagging the return's mean shows there.
CURVES = ("utility/total", "reward/mean", "loss/advantage", "loss/kl", "loss/entropy",
          "loss/value_loss")


def pca_2d(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean and top-2 principal axes of `points` [N, d]."""
  mean = points.mean(0)
  _, _, vt = np.linalg.svd(points - mean, full_matrices=False)
  return mean, vt[:2].T


def write_report(path, *, history: list[dict], comparison: dict[str, dict],
                 catalogue_z: np.ndarray, trajectories: np.ndarray, anchor_z: np.ndarray,
                 title: str) -> None:
  """history: metrics rows; comparison: `evaluate.compare_policies` results;
  trajectories [E, H+1, d]."""
  fig, axes = plt.subplots(2, 4, figsize=(20, 9))
  fig.suptitle(title)
  for ax, key in zip(axes.flat[:6], CURVES):
    rows = [(r["step"], r[key]) for r in history if key in r]
    if rows:
      steps, values = zip(*rows)
      ax.plot(steps, values, marker=".")
    ax.set_title(key)
    ax.set_xlabel("iteration")

  ax = axes.flat[6]  # Paired differences: each policy minus random on the same anchors.
  # Policies only: the results also hold a "warnings" list.
  names = [n for n, s in comparison.items() if isinstance(s, dict) and "minus_random" in s]
  means = [comparison[n]["minus_random"]["mean"] for n in names]
  cis = [comparison[n]["minus_random"]["ci95"] for n in names]
  ax.bar(range(len(names)), means, yerr=cis, capsize=4,
         color=["tab:red" if n == "eagle" else "tab:gray" for n in names])
  ax.axhline(0.0, color="black", lw=0.8)
  ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
  n = comparison[names[0]]["minus_random"]["n"] if names else 0
  ax.set_title(f"held-out U(x_H) minus random's, paired (95% CI, n={n})")

  ax = axes.flat[7]
  mean, axes2 = pca_2d(catalogue_z)
  proj = lambda z: (z - mean) @ axes2  # noqa: E731
  ax.scatter(*proj(catalogue_z).T, s=4, c="lightgray", label="catalogue")
  for traj in trajectories:
    p = proj(traj)
    ax.plot(p[:, 0], p[:, 1], "-", c="tab:red", alpha=0.5, lw=1)
    ax.scatter(p[-1:, 0], p[-1:, 1], s=14, c="tab:red", marker="x")
  ax.scatter(*proj(anchor_z).T, s=24, c="tab:blue", label="anchors")
  ax.set_title("latent space (PCA): anchors -> edited movies")
  ax.legend(loc="best", fontsize=8)
  fig.tight_layout()
  with artifacts.atomic_path(path) as tmp:
    fig.savefig(tmp, format="png", dpi=90)
  plt.close(fig)
