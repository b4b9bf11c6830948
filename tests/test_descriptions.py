"""Item text for E_D: built from MovieLens (title, genres, top tags) or read from a CSV."""

from __future__ import annotations

import logging
import pathlib

import pytest

from eagle_jax.world.descriptions import (csv_descriptions, load_descriptions,
                                         movielens_descriptions)
from eagle_jax.world.movielens import load_catalogue
from eagle_jax.errors import EagleError

MOVIES_CSV = """movieId,title,genres
1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy
2,Jumanji (1995),Adventure|Children|Fantasy
3,Hyena Road (2015),(no genres listed)
"""
RATINGS_CSV = "userId,movieId,rating,timestamp\n1,1,4.0,1\n1,2,3.0,2\n"
# Toy Story: "pixar" 3x in three spellings, "fun" and "animation" 2x (tie: alphabetical),
# "witty" once. Jumanji: no tags.
TAGS_CSV = """userId,movieId,tag,timestamp
1,1,Pixar,1
2,1,pixar ,2
3,1,PIXAR,3
1,1,fun,4
2,1,Fun,5
1,1,animation,6
2,1,Animation,7
3,1,witty,8
"""


@pytest.fixture
def catalogue(tmp_path):
  d = tmp_path / "tiny"
  d.mkdir()
  for name, text in {"movies.csv": MOVIES_CSV, "ratings.csv": RATINGS_CSV,
                     "tags.csv": TAGS_CSV}.items():
    (d / name).write_text(text)
  return load_catalogue(str(d))


def test_movielens_descriptions_exact_strings(catalogue):
  d = movielens_descriptions(catalogue)
  assert d.texts == {
      1: "Toy Story (1995). Genres: Adventure, Animation, Children, Comedy, Fantasy. "
         "Tags: pixar, animation, fun, witty.",
      2: "Jumanji (1995). Genres: Adventure, Children, Fantasy.",
      3: "Hyena Road (2015).",
  }
  assert d.missing == [] and d.source == "movielens"
  assert movielens_descriptions(catalogue, num_tags=2).texts[1].endswith(
      "Tags: pixar, animation.")
  assert movielens_descriptions(catalogue, num_tags=0).texts[1] == (
      "Toy Story (1995). Genres: Adventure, Animation, Children, Comedy, Fantasy.")
  with pytest.raises(EagleError, match="num_tags must be >= 0, got -1"):
    movielens_descriptions(catalogue, num_tags=-1)


def test_movielens_descriptions_without_tags_file(tmp_path):
  d = tmp_path / "notags"
  d.mkdir()
  (d / "movies.csv").write_text(MOVIES_CSV)
  (d / "ratings.csv").write_text(RATINGS_CSV)
  texts = movielens_descriptions(load_catalogue(str(d))).texts
  assert texts[1] == "Toy Story (1995). Genres: Adventure, Animation, Children, Comedy, Fantasy."


def test_embedded_descriptions():
  c = load_catalogue("embedded")
  d = load_descriptions("movielens", c)
  assert len(d.texts) == 9742 and d.missing == []
  # Checked by hand against tags.csv (counts per lower-cased tag, ties alphabetical).
  assert d.texts[1] == ("Toy Story (1995). Genres: Adventure, Animation, Children, Comedy, "
                        "Fantasy. Tags: pixar, fun.")
  assert d.texts[296] == ("Pulp Fiction (1994). Genres: Comedy, Crime, Drama, Thriller. Tags: "
                          "cult film, drugs, good dialogue, great soundtrack, hit men.")


def _write_csv(tmp_path: pathlib.Path, text: str) -> pathlib.Path:
  path = tmp_path / "descriptions.csv"
  path.write_text(text, encoding="utf-8")
  return path


def test_csv_descriptions(catalogue, tmp_path, caplog):
  path = _write_csv(tmp_path, (
      "\ufeffsource,movieId,description\n"
      'x,1,"Toys come alive, ""really"".\nA second line."\n'
      "x,2,   \n"
      "x,77,A film from a larger release.\n"
      "x,78,Another.\n"))
  with caplog.at_level(logging.WARNING):
    d = csv_descriptions(path, catalogue)
  assert d.texts == {1: 'Toys come alive, "really".\nA second line.'}
  assert d.missing == [2, 3]  # 2: empty text, 3: no row
  assert d.source == str(path)
  warnings = [r.getMessage() for r in caplog.records]
  assert warnings == [f"{path}: 2 movieIds not in catalogue tiny were ignored (first: 77, 78)"]
  assert load_descriptions(str(path), catalogue).texts == d.texts


@pytest.mark.parametrize("text, message", [
    ("movieId,overview\n1,x\n",
     r"header 'movieId,overview' lacks column\(s\) description; "
     r"expected a header with movieId,description"),
    # The quoted text spans lines 2-3; the bad record starts on line 4.
    ('movieId,description\n1,"two\nlines"\nabc,text\n',
     r"line 4: expected an integer movieId, got 'abc' in 'abc,text'"),
    ("movieId,description,extra\n1,a,b\n2,c\n",
     r"line 3: expected 3 fields movieId,description,extra, got '2,c'"),
    ("movieId,description\n1,a\n2,b\n1,c\n", r"line 4: movieId 1 already on line 2"),
    ("", r"header '' lacks column\(s\) movieId, description"),
])
def test_bad_csv_names_file_and_line(catalogue, tmp_path, text, message):
  path = _write_csv(tmp_path, text)
  with pytest.raises(EagleError, match=message) as err:
    csv_descriptions(path, catalogue)
  assert str(err.value).startswith(str(path))


def test_missing_descriptions_file(catalogue, tmp_path):
  with pytest.raises(EagleError, match=r"descriptions file .*nope\.csv: not found; expected a "
                                       r"CSV with columns movieId,description"):
    load_descriptions(str(tmp_path / "nope.csv"), catalogue)


def test_shared_tmdb_descriptions(shared_dir, caplog):
  path = shared_dir / "data" / "movies_text" / "ml-latest-small_descriptions.csv"
  if not path.is_file():
    pytest.skip(f"{path} is absent")
  c = load_catalogue("embedded")
  with caplog.at_level(logging.WARNING):
    d = load_descriptions(str(path), c)
  # shared/data/movies_text/README.md: 9,291 of 9,742 movies (95.4 %) have an overview.
  assert (len(d.texts), len(d.missing)) == (9291, 451)
  assert sorted([*d.texts, *d.missing]) == c.movie_ids.tolist()
  assert d.texts[1].startswith("Led by Woody, Andy's toys live happily in his room")
  assert not caplog.records  # every movieId of that file is in ml-latest-small
