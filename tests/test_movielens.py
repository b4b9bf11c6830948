"""MovieLens loading: both GroupLens formats, the embedded copy, tfds's guard, bad input."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import pathlib
import time

import numpy as np
import pytest

from eagle_jax.world.movielens import load_catalogue
from eagle_jax.errors import EagleError

# A tiny ml-latest-format directory, unsorted, with the awkward cases of the real files:
# a quoted title with a comma, no genres, no year, trailing spaces, a blank line, CRLF.
MOVIES_CSV = """movieId,title,genres
10,"American President, The (1995)",Comedy|Drama|Romance
1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy
7,Babylon 5,Sci-Fi
3,Hyena Road (2015) ,(no genres listed)
"""
RATINGS_CSV = ("userId,movieId,rating,timestamp\r\n1,1,4.0,964982703\r\n1,10,3.5,964981247\r\n"
               "2,1,5.0,964983815\r\n\r\n3,7,0.5,1445714994\r\n")
TAGS_CSV = """userId,movieId,tag,timestamp
1,1,Pixar,1
2,1,pixar ,2
2,1,fun,3
3,1,"witty, clever",4
3,10,politics,5
"""
# A tiny ml-100k-format directory: latin-1 title, "(V)" title, year only in the date.
U_GENRE = "unknown|0\nAction|1\nComedy|2\n\n"
U_ITEM = ("1|Café Society (1995)|01-Jan-1995||http://x|0|0|1\n"
          "2|unknown||||1|0|0\n"
          "3|Lost Tape (1995) (V)|01-Jan-1995||http://y|0|1|1\n"
          "4|No Year Film|05-May-1994||http://z|0|1|0\n")
U_DATA = "1\t1\t5\t881250949\n2\t3\t3\t881250950\n1\t4\t1\t881250951\n"
U_USER = "2|53|F|other|94043\n1|24|M|technician|85711\n"


def _write(directory: pathlib.Path, files: dict[str, str], encoding: str = "utf-8"):
  directory.mkdir(parents=True, exist_ok=True)
  for name, text in files.items():
    # newline="" keeps the CRLF of RATINGS_CSV as written.
    with open(directory / name, "w", encoding=encoding, newline="") as f:
      f.write(text)
  return directory


@pytest.fixture
def latest_dir(tmp_path):
  return _write(tmp_path / "tiny-latest",
                {"movies.csv": MOVIES_CSV, "ratings.csv": RATINGS_CSV, "tags.csv": TAGS_CSV})


@pytest.fixture
def ml100k_dir(tmp_path):
  return _write(tmp_path / "tiny-100k",
                {"u.genre": U_GENRE, "u.item": U_ITEM, "u.data": U_DATA, "u.user": U_USER},
                encoding="latin-1")


def test_latest_format(latest_dir):
  c = load_catalogue(str(latest_dir))
  assert c.name == "tiny-latest"
  np.testing.assert_array_equal(c.movie_ids, [1, 3, 7, 10])
  assert c.movie_ids.dtype == np.int64
  assert c.titles == ["Toy Story", "Hyena Road", "Babylon 5", "American President, The"]
  np.testing.assert_array_equal(c.years, [1995, 2015, 0, 1995])
  assert c.years.dtype == np.int32
  assert c.genres == [("Adventure", "Animation", "Children", "Comedy", "Fantasy"), (),
                      ("Sci-Fi",), ("Comedy", "Drama", "Romance")]
  r = c.ratings
  np.testing.assert_array_equal(r.user_ids, [1, 1, 2, 3])
  np.testing.assert_array_equal(r.movie_ids, [1, 10, 1, 7])
  np.testing.assert_array_equal(r.values, np.array([4.0, 3.5, 5.0, 0.5], np.float32))
  np.testing.assert_array_equal(r.timestamps, [964982703, 964981247, 964983815, 1445714994])
  assert (r.user_ids.dtype, r.values.dtype, r.timestamps.dtype) == (
      np.int64, np.float32, np.int64)
  assert c.tags.tags == ["Pixar", "pixar ", "fun", "witty, clever", "politics"]
  np.testing.assert_array_equal(c.tags.movie_ids, [1, 1, 1, 1, 10])
  np.testing.assert_array_equal(c.tags.user_ids, [1, 2, 2, 3, 3])
  assert c.users is None
  assert (c.num_movies, c.num_users) == (4, 3)
  assert [c.display_title(i) for i in range(4)] == [
      "Toy Story (1995)", "Hyena Road (2015)", "Babylon 5", "American President, The (1995)"]
  assert c.movie_index(10) == 3
  np.testing.assert_array_equal(c.movie_rows(np.array([7, 1, 7])), [2, 0, 2])


def test_gzipped_directory_loads_the_same(latest_dir, tmp_path):
  gz_dir = tmp_path / "gz"
  gz_dir.mkdir()
  for name in ("movies.csv", "ratings.csv", "tags.csv"):
    (gz_dir / f"{name}.gz").write_bytes(gzip.compress((latest_dir / name).read_bytes()))
  a, b = load_catalogue(str(latest_dir)), load_catalogue(str(gz_dir))
  assert a.titles == b.titles and a.tags.tags == b.tags.tags
  np.testing.assert_array_equal(a.ratings.values, b.ratings.values)


def test_ml100k_format(ml100k_dir):
  c = load_catalogue(str(ml100k_dir))
  np.testing.assert_array_equal(c.movie_ids, [1, 2, 3, 4])
  assert c.titles == ["Café Society", "unknown", "Lost Tape", "No Year Film"]
  np.testing.assert_array_equal(c.years, [1995, 0, 1995, 1994])
  # The "unknown" genre flag means no genre, like ml-latest's "(no genres listed)".
  assert c.genres == [("Comedy",), (), ("Action", "Comedy"), ("Action",)]
  np.testing.assert_array_equal(c.ratings.user_ids, [1, 2, 1])
  np.testing.assert_array_equal(c.ratings.movie_ids, [1, 3, 4])
  np.testing.assert_array_equal(c.ratings.values, [5.0, 3.0, 1.0])
  np.testing.assert_array_equal(c.ratings.timestamps, [881250949, 881250950, 881250951])
  assert c.tags is None
  np.testing.assert_array_equal(c.users.user_ids, [1, 2])
  np.testing.assert_array_equal(c.users.ages, [24, 53])
  assert c.users.genders == ["M", "F"] and c.users.occupations == ["technician", "other"]
  assert c.num_users == 2


def test_find_movie(latest_dir, tmp_path):
  c = load_catalogue(str(latest_dir))
  assert c.find_movie("Toy Story (1995)") == 0
  assert c.find_movie("  toy story ") == 0
  assert c.find_movie("AMERICAN PRESIDENT, THE (1995)") == 3
  assert c.find_movie("Babylon 5") == 2
  assert c.find_movie("movieId:7") == 2
  with pytest.raises(EagleError, match=r"no movie 'Toy Stroy' in tiny-latest; "
                                       r"close matches: Toy Story \(1995\)"):
    c.find_movie("Toy Stroy")
  with pytest.raises(EagleError, match="no close matches"):
    c.find_movie("zzzzzz")
  with pytest.raises(EagleError, match="movieId 99 is not in catalogue tiny-latest"):
    c.find_movie("movieId:99")
  twins = load_catalogue(str(_write(tmp_path / "twins", {
      "movies.csv": "movieId,title,genres\n838,Emma (1996),Drama\n26958,Emma (1996),Romance\n",
      "ratings.csv": "userId,movieId,rating,timestamp\n1,838,4,1\n"})))
  with pytest.raises(EagleError, match=r"matches 2 movies .*\[movieId:838\], .*"
                                       r"\[movieId:26958\]; pass 'movieId:<id>'"):
    twins.find_movie("Emma (1996)")
  assert twins.find_movie("movieId:26958") == 1


def test_movie_rows_with_sparse_ids(tmp_path):
  # Ids too large for a dense id -> row table take the binary-search path; same answers.
  c = load_catalogue(str(_write(tmp_path / "sparse", {
      "movies.csv": "movieId,title,genres\n5,A (2000),Drama\n1000000000000,B (2001),Drama\n",
      "ratings.csv": "userId,movieId,rating,timestamp\n1,1000000000000,4,1\n1,5,3,2\n"})))
  np.testing.assert_array_equal(c.movie_rows(np.array([1000000000000, 5])), [1, 0])
  with pytest.raises(EagleError, match="movieId 6 is not in catalogue sparse"):
    c.movie_rows(np.array([5, 6]))
  with pytest.raises(EagleError, match="movieId -1 is not in catalogue tiny"):
    load_catalogue(str(_write(tmp_path / "tiny", {"movies.csv": MOVIES_CSV,
                                                  "ratings.csv": RATINGS_CSV}))).movie_index(-1)


def _replace(directory, name, old, new):
  path = directory / name
  text = path.read_bytes().decode("utf-8")  # bytes: keep the CRLFs
  assert old in text
  path.write_bytes(text.replace(old, new).encode("utf-8"))


@pytest.mark.parametrize("name, old, new, message", [
    # Truncated: the last line is cut mid-row, no newline.
    ("ratings.csv", "3,7,0.5,1445714994\r\n", "3,7,0.",
     r"ratings\.csv line 6: expected 4 fields userId,movieId,rating,timestamp, got '3,7,0\.'"),
    ("ratings.csv", "2,1,5.0,964983815", "abc,1",
     r"ratings\.csv line 4: expected 4 fields userId,movieId,rating,timestamp, got 'abc,1'"),
    ("ratings.csv", "1,10,3.5,964981247", "1,x,3.5,964981247",
     r"ratings\.csv line 3: expected an integer movieId, got 'x' in '1,x,3\.5,964981247'"),
    ("ratings.csv", "3,7,0.5", "3,99,0.5",
     r"ratings\.csv line 6: movieId 99 is not in movies\.csv"),
    ("ratings.csv", "1,10,3.5,", "1,10,nan,", r"ratings\.csv line 3: rating nan is not a number"),
    ("ratings.csv", "1,10,3.5,", "1,10,-1.0,",
     r"ratings\.csv line 3: rating -1\.0 is outside MovieLens' 0\.5-5\.0 stars"),
    ("ratings.csv", "userId,movieId,rating,", "userId,movieId,stars,",
     r"ratings\.csv: header 'userId,movieId,stars,timestamp' lacks column\(s\) rating; "
     r"expected header userId,movieId,rating,timestamp"),
    ("movies.csv", "movieId,title,genres", "movieId,title",
     r"movies\.csv: header 'movieId,title' lacks column\(s\) genres; "
     r"expected a header with movieId,title,genres"),
    ("movies.csv", "7,Babylon 5,Sci-Fi", "7,Babylon 5",
     r"movies\.csv line 4: expected 3 fields movieId,title,genres, got '7,Babylon 5'"),
    ("movies.csv", "7,Babylon 5", "1,Babylon 5",
     r"movies\.csv line 4: movieId 1 already on line 3"),
    ("tags.csv", "3,10,politics", "3,11,politics",
     r"tags\.csv line 6: movieId 11 is not in movies\.csv"),
])
def test_bad_latest_input_names_file_and_line(latest_dir, name, old, new, message):
  _replace(latest_dir, name, old, new)
  with pytest.raises(EagleError, match=message) as err:
    load_catalogue(str(latest_dir))
  assert str(latest_dir / name) in str(err.value)
  assert "\n" not in str(err.value)


@pytest.mark.parametrize("name, old, new, message", [
    ("u.data", "2\t3\t3\t881250950", "2\t3\t3",
     r"u\.data line 2: expected 4 fields user id\titem id\trating\ttimestamp, got '2\\t3\\t3'"),
    ("u.data", "2\t3\t3", "2\t9\t3", r"u\.data line 2: item id 9 is not in u\.item"),
    ("u.item", "http://z|0|1|0", "http://z|0|1",
     r"u\.item line 4: expected 8 fields movie id\|.*\|Comedy flag, got '4\|No Year Film"),
    ("u.user", "1|24|M", "1|x|M", r"u\.user line 2: expected an integer age, got 'x'"),
    ("u.genre", "Comedy|2", "Comedy|1", r"u\.genre line 3: index 1 already on line 2"),
    ("u.item", "4|No Year", "3|No Year", r"u\.item line 4: movie id 3 already on line 3"),
])
def test_bad_100k_input_names_file_and_line(ml100k_dir, name, old, new, message):
  path = ml100k_dir / name
  path.write_text(path.read_text(encoding="latin-1").replace(old, new), encoding="latin-1")
  with pytest.raises(EagleError, match=message):
    load_catalogue(str(ml100k_dir))


def test_a_ratings_file_cut_at_a_line_boundary_is_caught_by_the_declared_count(
    latest_dir, ml100k_dir):
  # GroupLens states the count (README.txt, u.info); the tiny files hold 4 and 3 ratings.
  (latest_dir / "README.txt").write_text("It contains 4 ratings and 5 tag applications.\n")
  assert len(load_catalogue(str(latest_dir)).ratings) == 4
  _replace(latest_dir, "ratings.csv", "3,7,0.5,1445714994\r\n", "")
  with pytest.raises(EagleError, match=r"ratings\.csv: 3 ratings, but README\.txt says 4: "
                     "the file is incomplete"):
    load_catalogue(str(latest_dir))
  (ml100k_dir / "u.info").write_text("2 users\n4 items\n4 ratings\n")
  with pytest.raises(EagleError, match=r"u\.data: 3 ratings, but u\.info says 4"):
    load_catalogue(str(ml100k_dir))


def test_undecodable_and_corrupt_files(latest_dir):
  (latest_dir / "movies.csv").write_bytes(MOVIES_CSV.replace("Babylon", "B\xe9bylon")
                                          .encode("latin-1"))
  with pytest.raises(EagleError, match=r"movies\.csv: not utf-8 text"):
    load_catalogue(str(latest_dir))
  (latest_dir / "movies.csv").unlink()
  data = gzip.compress(MOVIES_CSV.encode())
  (latest_dir / "movies.csv.gz").write_bytes(data[: len(data) // 2])  # a cut download
  with pytest.raises(EagleError, match=r"movies\.csv\.gz: cannot read"):
    load_catalogue(str(latest_dir))


def test_header_only_ratings(latest_dir):
  (latest_dir / "ratings.csv").write_text("userId,movieId,rating,timestamp\n")
  with pytest.raises(EagleError, match=r"ratings\.csv: no data rows"):
    load_catalogue(str(latest_dir))


def test_missing_directory(tmp_path):
  with pytest.raises(EagleError, match=r"'.*nope': no such directory; expected 'embedded', "
                                       r"'tfds:movielens/<config>' or a GroupLens directory"):
    load_catalogue(str(tmp_path / "nope"))


def test_unknown_format_lists_expected_files(tmp_path):
  _write(tmp_path / "odd", {"movies.dat": "1::Toy Story (1995)::Animation\n"})
  with pytest.raises(EagleError) as err:
    load_catalogue(str(tmp_path / "odd"))
  msg = str(err.value)
  assert "not a MovieLens directory" in msg and "found movies.dat" in msg
  assert "movies.csv + ratings.csv (+ tags.csv)" in msg
  assert "u.data + u.item + u.genre (+ u.user)" in msg


def test_100k_without_genre_file(ml100k_dir):
  (ml100k_dir / "u.genre").unlink()
  with pytest.raises(EagleError, match="ml-100k directory without u.genre"):
    load_catalogue(str(ml100k_dir))


def test_tfds_without_tensorflow_fails_at_once(monkeypatch):
  real_find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda name, *a: None if name == "tensorflow" else real_find_spec(name, *a))
  start = time.perf_counter()
  with pytest.raises(EagleError, match=r"tfds MovieLens needs TensorFlow \(pip install "
                                       r"tensorflow-cpu\) and network access; offline, pass "
                                       r"a GroupLens directory instead"):
    load_catalogue("tfds:movielens/25m-ratings")
  assert time.perf_counter() - start < 1.0


def test_tfds_unknown_config():
  with pytest.raises(EagleError, match=r"tfds source tfds:movielens/7m-ratings: expected "
                                       r"tfds:movielens/<size>-ratings with size one of 25m"):
    load_catalogue("tfds:movielens/7m-ratings")


def test_embedded_default():
  start = time.perf_counter()
  c = load_catalogue("embedded")
  seconds = time.perf_counter() - start
  assert c.name == "ml-latest-small"
  assert (c.num_movies, len(c.ratings), c.num_users, len(c.tags)) == (9742, 100836, 610, 3683)
  assert c.users is None
  assert c.display_title(0) == "Toy Story (1995)"
  assert c.genres[0] == ("Adventure", "Animation", "Children", "Comedy", "Fantasy")
  # Facts from the GroupLens data (shared/data/movielens/README.md): mean rating, time span,
  # 9,724 movies rated, 34 without genres, 13 titles without a plain "(year)".
  assert abs(float(c.ratings.values.mean()) - 3.5016) < 1e-4
  assert (c.ratings.timestamps.min(), c.ratings.timestamps.max()) == (828124615, 1537799250)
  assert len(np.unique(c.ratings.movie_ids)) == 9724
  assert sum(not g for g in c.genres) == 34
  assert int((c.years == 0).sum()) == 12  # "Death Note (2006–2007)" keeps its first year
  assert c.find_movie("Death Note: Desu nôto (2006)") == c.movie_index(171749)
  assert seconds < 2.0, f"embedded catalogue took {seconds:.2f} s (target < 2 s)"


def test_embedded_files_are_the_grouplens_files(repo_root, shared_dir):
  embedded = repo_root / "eagle_jax" / "world" / "embedded"
  # Only what GroupLens lets us redistribute, and only what is used (no links.csv), plus the
  # `describe` stage's descriptions derived from them (tests/test_describe.py checks those).
  names = sorted(p.name for p in embedded.iterdir())
  assert [n for n in names if not n.startswith("described-")] == [
      "NOTICE.md", "README.txt", "movies.csv.gz", "ratings.csv.gz", "tags.csv.gz"]
  assert all(n.endswith(".csv.gz") for n in names if n.startswith("described-"))
  for name in ("movies.csv", "ratings.csv", "tags.csv"):
    original = (shared_dir / "data" / "movielens" / "ml-latest-small" / name).read_bytes()
    assert gzip.decompress((embedded / f"{name}.gz").read_bytes()) == original, name
  assert ((embedded / "README.txt").read_bytes() ==
          (shared_dir / "data" / "movielens" / "ml-latest-small" / "README.txt").read_bytes())
  assert hashlib.sha256(gzip.decompress((embedded / "ratings.csv.gz").read_bytes())).hexdigest(
  ) == "aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646"


def test_shared_ml_latest_small_matches_embedded(shared_dir):
  a = load_catalogue(str(shared_dir / "data" / "movielens" / "ml-latest-small"))
  b = load_catalogue("embedded")
  assert a.name == b.name == "ml-latest-small"
  np.testing.assert_array_equal(a.movie_ids, b.movie_ids)
  assert a.titles == b.titles and a.genres == b.genres and a.tags.tags == b.tags.tags
  np.testing.assert_array_equal(a.ratings.timestamps, b.ratings.timestamps)


def test_shared_ml100k(shared_dir):
  c = load_catalogue(str(shared_dir / "data" / "movielens" / "ml-100k"))
  assert (c.num_movies, len(c.ratings), c.num_users, len(c.users.user_ids)) == (
      1682, 100000, 943, 943)
  assert abs(float(c.ratings.values.mean()) - 3.52986) < 1e-5
  assert c.display_title(0) == "Toy Story (1995)"
  assert c.genres[0] == ("Animation", "Children's", "Comedy")
  assert c.titles[c.movie_index(267)] == "unknown" and c.years[c.movie_index(267)] == 0
  assert c.display_title(c.movie_index(1412)) == (
      "Land Before Time III: The Time of the Great Giving (1995)")
  # 9 u.item lines have non-ASCII latin-1 bytes.
  assert sum(not t.isascii() for t in c.titles) == 9
  assert "Misérables, Les" in c.titles
  assert (c.users.ages[0], c.users.genders[0], c.users.occupations[0]) == (24, "M", "technician")

