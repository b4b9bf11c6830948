"""Item text x for the encoder E_D: built from MovieLens itself, or read from a CSV.

The MovieLens text (title, year, genres, most frequent user tags) is the fields part of
every description: measured on ml-latest-small, it predicts the ALS item embeddings better
than plot overviews (DESIGN.md, "Reward fidelity"). The `describe` stage appends LLM prose
after `PLOT_LABEL`, so catalogue, anchors and rewrites share one format:

  "Toy Story (1995). Genres: Adventure, Animation. Tags: pixar, fun. Plot: A cowboy doll ..."
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import pathlib
from typing import Iterable

from eagle_jax.run import folder as run_folder
from eagle_jax.world.movielens import Catalogue, Tags, read_records
from eagle_jax.errors import EagleError

MOVIELENS = "movielens"
DESCRIBED = "described"  # The run folder's descriptions CSV, written by the `describe` stage.
PLOT_LABEL = "Plot:"
FIELD_LABELS = ("Genres:", "Tags:", PLOT_LABEL)
_CSV_COLUMNS = (("movieId", int), ("description", str))

_log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Descriptions:
  """One text per movie id. `missing` lists catalogue movies without text (sorted);
  callers exclude them and report how many."""
  texts: dict[int, str]
  missing: list[int]
  source: str


def movielens_descriptions(catalogue: Catalogue, num_tags: int = 5) -> Descriptions:
  """E.g. "Toy Story (1995). Genres: Adventure, Animation. Tags: pixar, fun."

  The `num_tags` most frequent tags of each movie, case-folded and deduplicated, ties
  broken alphabetically; no "Genres:"/"Tags:" part when the movie has none.
  """
  if num_tags < 0:
    raise EagleError(f"num_tags must be >= 0, got {num_tags}")
  top = _top_tags(catalogue.tags, num_tags) if catalogue.tags is not None else {}
  texts = {}
  for i, movie_id in enumerate(catalogue.movie_ids.tolist()):
    parts = [catalogue.display_title(i)]
    if catalogue.genres[i]:
      parts.append(f"Genres: {', '.join(catalogue.genres[i])}")
    if top.get(movie_id):
      parts.append(f"Tags: {', '.join(top[movie_id])}")
    texts[movie_id] = ". ".join(parts) + "."
  return Descriptions(texts=texts, missing=[], source=MOVIELENS)


def split_plot(text: str) -> tuple[str, str]:
  """(fields, plot) of a description; the plot is "" when it has none."""
  fields, _, plot = text.partition(PLOT_LABEL)
  return fields.strip(), plot.strip()


def with_plot(fields: str, plot: str) -> str:
  """The description with these fields and this plot (just the fields when it is empty)."""
  return f"{fields.strip()} {PLOT_LABEL} {plot.strip()}" if plot.strip() else fields.strip()


def breaks_format(plot: str) -> bool:
  """Whether a plot writes field labels: E_D would then read fields where prose belongs."""
  return any(label in plot for label in FIELD_LABELS)


def csv_descriptions(path: str | os.PathLike, catalogue: Catalogue) -> Descriptions:
  """Reads a CSV whose header has `movieId` and `description` (other columns ignored).

  Empty descriptions count as missing. Ids not in the catalogue are skipped with one
  warning line, since description files are often made for a larger MovieLens release.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise EagleError(f"descriptions file {path}: not found; expected a CSV with columns "
                     "movieId,description")
  known = set(catalogue.movie_ids.tolist())
  texts: dict[int, str] = {}
  unknown = []
  for _, (movie_id, text) in read_records(path, _CSV_COLUMNS, unique="movieId"):
    if movie_id not in known:
      unknown.append(movie_id)
    elif text.strip():
      texts[movie_id] = text.strip()
  if unknown:
    _log.warning("%s: %d movieIds not in catalogue %s were ignored (first: %s)", path,
                 len(unknown), catalogue.name, ", ".join(map(str, unknown[:5])))
  missing = [m for m in catalogue.movie_ids.tolist() if m not in texts]
  return Descriptions(texts=texts, missing=missing, source=str(path))


def load_descriptions(spec: str, catalogue: Catalogue, num_tags: int = 5,
                      workdir: str | os.PathLike = ".") -> Descriptions:
  """`spec` is "movielens" (built from the catalogue), "described" (the `describe` stage's
  output in `workdir`) or the path of a descriptions CSV."""
  if spec == MOVIELENS:
    return movielens_descriptions(catalogue, num_tags)
  if spec == DESCRIBED:
    path = pathlib.Path(workdir) / run_folder.DESCRIPTIONS_CSV
    if not path.is_file():
      raise EagleError(f"{path}: not found; config.data.descriptions='described' reads the "
                       "output of `python -m eagle_jax describe` (run it first, same config)")
    return csv_descriptions(path, catalogue)
  return csv_descriptions(spec, catalogue)


def frequent_tags(texts: Iterable[str], count: int) -> tuple[str, ...]:
  """The `count` most used tags, case-folded and space-normalised; ties alphabetically.

  "Pixar ", "pixar" and "PIXAR" are one tag.
  """
  counts = collections.Counter(" ".join(t.casefold().split()) for t in texts)
  counts.pop("", None)
  return tuple(t for t, _ in sorted(counts.items(), key=lambda tc: (-tc[1], tc[0])))[:count]


def _top_tags(tags: Tags, num_tags: int) -> dict[int, tuple[str, ...]]:
  by_movie: dict[int, list[str]] = collections.defaultdict(list)
  for movie_id, tag in zip(tags.movie_ids.tolist(), tags.tags):
    by_movie[movie_id].append(tag)
  return {m: frequent_tags(texts, num_tags) for m, texts in by_movie.items()}
