"""MovieLens as one typed catalogue, from any of its three homes.

Sources: the embedded ml-latest-small (vendored, gzipped, in `embedded/`), a GroupLens
directory (ml-latest / ml-20m / ml-25m CSVs, or ml-100k's `u.*` files; any file may also be
gzipped as `NAME.gz`), or tensorflow_datasets (`tfds:movielens/<config>`, needs TensorFlow
and network). Ratings go through numpy's C parser because ml-25m has 25M rows; only when
that fails does a line-by-line pass run, to name the bad line.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import dataclasses
import difflib
import functools
import gzip
import importlib.resources
import importlib.util
import pathlib
import re
import warnings
import zlib
from typing import IO, Iterator, Sequence

import numpy as np

from eagle_jax.errors import EagleError

EMBEDDED = "embedded"
EMBEDDED_NAME = "ml-latest-small"
TFDS_PREFIX = "tfds:"
TFDS_SIZES = ("25m", "20m", "1m", "100k", "latest-small")
STARS = (0.5, 5.0)  # The range of a MovieLens rating (ml-100k: whole stars 1-5).

# (name, type) of each column, in the order the parsed values come back.
Column = tuple[str, type]
_MOVIES_COLUMNS: tuple[Column, ...] = (("movieId", int), ("title", str), ("genres", str))
_RATINGS_COLUMNS: tuple[Column, ...] = (
    ("userId", int), ("movieId", int), ("rating", float), ("timestamp", int))
_TAGS_COLUMNS: tuple[Column, ...] = (
    ("userId", int), ("movieId", int), ("tag", str), ("timestamp", int))
_U_DATA_COLUMNS: tuple[Column, ...] = (
    ("user id", int), ("item id", int), ("rating", float), ("timestamp", int))
_U_ITEM_LEADING: tuple[Column, ...] = (
    ("movie id", int), ("movie title", str), ("release date", str),
    ("video release date", str), ("IMDb URL", str))
_U_USER_COLUMNS: tuple[Column, ...] = (
    ("user id", int), ("age", int), ("gender", str), ("occupation", str), ("zip code", str))
_U_GENRE_COLUMNS: tuple[Column, ...] = (("genre", str), ("index", int))
_NUMPY_TYPES = {int: np.int64, float: np.float32}

# "(no genres listed)" (ml-latest) and "unknown" (ml-100k flag 0) mean: no genre.
_NO_GENRE = frozenset({"(no genres listed)", "unknown"})
# "Title (1995)", "Title (2006–2007)" (a series: first year), ml-100k's "Title (1995) (V)"
# (video release), optional trailing spaces.
_TITLE_YEAR = re.compile(
    r"^(?P<title>.*?)\s*\((?P<year>\d{4})(?:[–-]\s*\d{0,4})?\s*\)(?:\s*\(V\))?\s*$")
_MOVIE_ID_QUERY = re.compile(r"^movieId:\s*(\d+)$")

_LATEST_FILES = "movies.csv + ratings.csv (+ tags.csv) [ml-latest / ml-20m / ml-25m format]"
_ML100K_FILES = "u.data + u.item + u.genre (+ u.user) [ml-100k format]"
_NO_TF = ("tfds MovieLens needs TensorFlow (pip install tensorflow-cpu) and network access; "
          "offline, pass a GroupLens directory instead")


@dataclasses.dataclass(frozen=True, eq=False)
class Ratings:
  """One row per rating, parallel arrays."""
  user_ids: np.ndarray    # int64 [R]
  movie_ids: np.ndarray   # int64 [R]
  values: np.ndarray      # float32 [R], stars
  timestamps: np.ndarray  # int64 [R], unix seconds

  def __len__(self) -> int:
    return len(self.values)


@dataclasses.dataclass(frozen=True, eq=False)
class Tags:
  """Free-text tag applications (ml-latest format only), as written by the users."""
  user_ids: np.ndarray  # int64 [T]
  movie_ids: np.ndarray  # int64 [T]
  tags: list[str]

  def __len__(self) -> int:
    return len(self.tags)


@dataclasses.dataclass(frozen=True, eq=False)
class Users:
  """ml-100k demographics, sorted by user id."""
  user_ids: np.ndarray  # int64 [U]
  ages: np.ndarray      # int32 [U]
  genders: list[str]    # "M" / "F"
  occupations: list[str]


@dataclasses.dataclass(frozen=True, eq=False)
class Catalogue:
  """Movies (rows sorted by movie id) with their ratings and, where the format has them,
  tags and user demographics."""
  name: str
  movie_ids: np.ndarray  # int64 [M], strictly increasing
  titles: list[str]      # without the "(1995)" suffix
  years: np.ndarray      # int32 [M], 0 when unknown
  genres: list[tuple[str, ...]]
  ratings: Ratings
  tags: Tags | None
  users: Users | None

  def __post_init__(self):
    m = len(self.movie_ids)
    if not (len(self.titles) == len(self.years) == len(self.genres) == m):
      raise ValueError(f"catalogue {self.name}: per-movie fields differ in length")
    if m and not np.all(np.diff(self.movie_ids) > 0):
      raise ValueError(f"catalogue {self.name}: movie_ids must be strictly increasing")

  @property
  def num_movies(self) -> int:
    return len(self.movie_ids)

  @functools.cached_property
  def user_ids(self) -> np.ndarray:
    """Distinct users who rated, sorted (int64 [U])."""
    return np.unique(self.ratings.user_ids)

  @property
  def num_users(self) -> int:
    return len(self.user_ids)

  def rating_counts(self) -> np.ndarray:
    """Ratings per movie (int64 [M], catalogue rows)."""
    rows = np.searchsorted(self.movie_ids, self.ratings.movie_ids)
    return np.bincount(rows, minlength=self.num_movies)

  def movie_rows(self, movie_ids: np.ndarray) -> np.ndarray:
    """Catalogue rows of many movie ids at once (int64, same shape)."""
    movie_ids = np.asarray(movie_ids, dtype=np.int64)
    rows, known = _rows_of(self.movie_ids, movie_ids)
    if not known.all():
      raise EagleError(f"movieId {movie_ids[~known].flat[0]} is not in catalogue {self.name}")
    return rows

  def movie_index(self, movie_id: int) -> int:
    return int(self.movie_rows(np.asarray([movie_id]))[0])

  def display_title(self, i: int) -> str:
    """The GroupLens form, e.g. "Toy Story (1995)"."""
    year = int(self.years[i])
    return f"{self.titles[i]} ({year})" if year else self.titles[i]

  def find_movie(self, query: str) -> int:
    """Row of the movie named by `query`.

    Accepts "Title (Year)" exactly, then a case-insensitive match of "Title (Year)" or of
    the bare title, or "movieId:<id>" to pick one of several movies with the same title.
    """
    q = query.strip()
    if m := _MOVIE_ID_QUERY.match(q):
      return self.movie_index(int(m[1]))
    displays = [self.display_title(i) for i in range(self.num_movies)]
    hits = [i for i, d in enumerate(displays) if d == q]
    if not hits:
      folded = q.casefold()
      hits = [i for i, d in enumerate(displays)
              if d.casefold() == folded or self.titles[i].casefold() == folded]
    if len(hits) == 1:
      return hits[0]
    if hits:
      listed = ", ".join(f"{displays[i]} [movieId:{self.movie_ids[i]}]" for i in hits[:10])
      raise EagleError(f"movie {query!r} matches {len(hits)} movies in {self.name}: {listed}; "
                       "pass 'movieId:<id>' to pick one")
    # Compare against both forms so "toy stroy" and "Toy Stroy (1995)" both find Toy Story.
    by_form = {}
    for i, d in enumerate(displays):
      by_form.setdefault(d.casefold(), i)
      by_form.setdefault(self.titles[i].casefold(), i)
    close = difflib.get_close_matches(q.casefold(), list(by_form), n=8, cutoff=0.6)
    names = list(dict.fromkeys(displays[by_form[c]] for c in close))[:5]
    suggestion = f"close matches: {'; '.join(names)}" if names else "no close matches"
    raise EagleError(f"no movie {query!r} in {self.name}; {suggestion}")


def load_catalogue(source: str) -> Catalogue:
  """Loads "embedded", a GroupLens directory, or "tfds:movielens/<config>"."""
  if source == EMBEDDED:
    return _load_directory(_embedded_dir(), EMBEDDED_NAME)
  if source.startswith(TFDS_PREFIX):
    return _load_tfds(source[len(TFDS_PREFIX):])
  path = pathlib.Path(source).expanduser()
  if not path.is_dir():
    raise EagleError(f"MovieLens source {source!r}: no such directory; expected "
                     f"{EMBEDDED!r}, '{TFDS_PREFIX}movielens/<config>' or a GroupLens directory")
  return _load_directory(path, path.resolve().name)


def read_records(path: pathlib.Path, columns: Sequence[Column], *, header: bool = True,
                 delimiter: str = ",", encoding: str = "utf-8", quoted: bool = True,
                 unique: str | None = None) -> Iterator[tuple[int, list]]:
  """Yields (1-based first line, values in `columns` order) for each non-empty record.

  With a header, `columns` are looked up by name (other columns are ignored, but every
  record must have as many fields as the header); without, they are positional. Values
  are converted to each column's type; the values of column `unique` must not repeat.
  The first malformed record raises EagleError naming the file, line and record text.
  """
  names = [name for name, _ in columns]
  with _open_text(path, encoding) as f:
    reader = csv.reader(f, delimiter=delimiter,
                        quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE)
    positions = list(range(len(columns)))
    num_fields = len(columns)
    expected = delimiter.join(names)
    if header:
      found = [h.strip().lstrip("\ufeff") for h in next(reader, [])]
      lacking = [n for n in names if n not in found]
      if lacking:
        raise EagleError(f"{path}: header {delimiter.join(found)!r} lacks column(s) "
                         f"{', '.join(lacking)}; expected a header with {expected}")
      positions = [found.index(n) for n in names]
      num_fields = len(found)
      expected = delimiter.join(found)
    typed = [(kind, pos) for (_, kind), pos in zip(columns, positions)]
    key = names.index(unique) if unique else None
    first_line = {}
    last_line = reader.line_num
    for fields in reader:
      line, last_line = last_line + 1, reader.line_num
      if not fields:
        continue  # an empty line (numpy's parser skips these too)
      if len(fields) != num_fields:
        raise EagleError(f"{path} line {line}: expected {num_fields} fields {expected}, "
                         f"got {delimiter.join(fields)!r}")
      try:
        values = [kind(fields[pos]) for kind, pos in typed]
      except ValueError:
        raise _bad_value(path, line, columns, positions, fields, delimiter) from None
      if key is not None:
        if values[key] in first_line:
          raise EagleError(f"{path} line {line}: {unique} {values[key]} already on line "
                           f"{first_line[values[key]]}")
        first_line[values[key]] = line
      yield line, values


def _bad_value(path: pathlib.Path, line: int, columns: Sequence[Column],
               positions: Sequence[int], fields: list[str], delimiter: str) -> EagleError:
  """The error for the first field of a record that does not convert to its type."""
  for (name, kind), pos in zip(columns, positions):
    try:
      kind(fields[pos])
    except ValueError:
      what = {int: "an integer", float: "a number"}[kind]
      return EagleError(f"{path} line {line}: expected {what} {name}, got {fields[pos]!r} "
                        f"in {delimiter.join(fields)!r}")
  raise AssertionError("no field fails to convert")


@contextlib.contextmanager
def _naming_file(path: pathlib.Path, encoding: str) -> Iterator[None]:
  """Turns decoding and decompression errors into EagleErrors that name the file."""
  try:
    yield
  except UnicodeDecodeError as e:
    raise EagleError(f"{path}: not {encoding} text ({e.reason} at byte {e.start})") from None
  except (OSError, EOFError, zlib.error) as e:
    raise EagleError(f"{path}: cannot read ({e})") from None


@contextlib.contextmanager
def _open_text(path: pathlib.Path, encoding: str) -> Iterator[IO[str]]:
  """Opens a text file, gzipped or not."""
  opener = gzip.open if path.suffix == ".gz" else open
  with _naming_file(path, encoding), opener(path, "rt", encoding=encoding, newline="") as f:
    yield f


def _read_numeric(path: pathlib.Path, columns: Sequence[Column], *, header: bool,
                  delimiter: str) -> np.ndarray:
  """A structured array of an all-numeric file, through numpy's C parser.

  The header must be exactly `columns` (GroupLens files are), which keeps the fast path
  free of column selection. numpy reads the file by name: that is 1.5x faster than from
  a Python file object, and it decompresses ".gz" itself.
  """
  names = [name for name, _ in columns]
  dtype = np.dtype([(name, _NUMPY_TYPES[kind]) for name, kind in columns])
  if header:
    with _open_text(path, "utf-8") as f:
      found = [h.strip().lstrip("\ufeff") for h in f.readline().split(delimiter)]
    if found != names:
      lacking = [n for n in names if n not in found]
      problem = (f"lacks column(s) {', '.join(lacking)}" if lacking
                 else "has other or reordered columns")
      raise EagleError(f"{path}: header {delimiter.join(found)!r} {problem}; expected "
                       f"header {delimiter.join(names)}")
  with _naming_file(path, "utf-8"):
    try:
      with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "input contained no data": checked below
        data = np.loadtxt(path, dtype=dtype, delimiter=delimiter, comments=None, ndmin=1,
                          skiprows=int(header), encoding="utf-8")
    except ValueError as e:  # UnicodeDecodeError too: the slow pass reports it
      error = e
    else:
      if not len(data):
        raise EagleError(f"{path}: no data rows")
      return data
  # The slow pass names the file, line and text; numpy's message only has a row count.
  for _ in read_records(path, columns, header=header, delimiter=delimiter, quoted=False):
    pass
  raise EagleError(f"{path}: {error}")


def _rows_of(sorted_ids: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Positions of `ids` in `sorted_ids`, and which of them are present.

  MovieLens ids are small non-negative integers, so a dense id -> row table works and is
  50x faster than a binary search on 25M ratings; other ids fall back to the search.
  """
  if not len(sorted_ids):
    return np.zeros(ids.shape, np.int64), np.zeros(ids.shape, bool)
  if sorted_ids[0] >= 0 and sorted_ids[-1] < 8 * len(sorted_ids) + (1 << 20):
    table = np.full(int(sorted_ids[-1]) + 1, -1, np.int64)
    table[sorted_ids] = np.arange(len(sorted_ids))
    in_range = (ids >= 0) & (ids < len(table))
    rows = np.where(in_range, table[np.where(in_range, ids, 0)], -1)
    return np.maximum(rows, 0), rows >= 0
  rows = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
  return rows.astype(np.int64), sorted_ids[rows] == ids


def _check_ratings(path: pathlib.Path, ratings: Ratings, known_ids: np.ndarray, *,
                   header: bool, column: str, movies_file: str) -> None:
  """Every rated movie must be in the movie table and every rating a number of stars in
  MovieLens' range ("nan" parses); the error names the rating's line."""
  _, known = _rows_of(known_ids, ratings.movie_ids)
  lo, hi = STARS
  checks = (
      (known, lambda r: f"{column} {ratings.movie_ids[r]} is not in {movies_file}"),
      (np.isfinite(ratings.values), lambda r: f"rating {ratings.values[r]} is not a number"),
      ((ratings.values >= lo) & (ratings.values <= hi),
       lambda r: f"rating {ratings.values[r]} is outside MovieLens' {lo}-{hi} stars"),
  )
  for ok, problem in checks:
    if not ok.all():
      record = int(np.argmin(ok))
      line = _line_of_record(path, record, header=header)
      raise EagleError(f"{path} line {line}: {problem(record)}")


def _line_of_record(path: pathlib.Path, record: int, *, header: bool) -> int:
  """1-based line of the `record`-th data record (0-based) of an unquoted text file."""
  seen = -1
  with _open_text(path, "utf-8") as f:
    for line, text in enumerate(f, 1):
      if (header and line == 1) or not text.rstrip("\r\n"):
        continue
      seen += 1
      if seen == record:
        return line
  raise ValueError(f"{path} has fewer than {record + 1} records")


def _split_title(raw: str) -> tuple[str, int]:
  """"Toy Story (1995)" -> ("Toy Story", 1995); no year -> (title, 0)."""
  m = _TITLE_YEAR.match(raw)
  return (m["title"], int(m["year"])) if m else (raw.strip(), 0)


def _real_genres(names) -> tuple[str, ...]:
  return tuple(g for g in names if g.casefold() not in _NO_GENRE)


def _assemble(name: str, ids: Sequence[int], titles: Sequence[str], years: Sequence[int],
              genres: Sequence[tuple[str, ...]], ratings: Ratings, tags: Tags | None,
              users: Users | None) -> Catalogue:
  """Sorts movies by id."""
  ids = np.asarray(ids, dtype=np.int64)
  order = np.argsort(ids, kind="stable")
  return Catalogue(name=name, movie_ids=ids[order], titles=[titles[i] for i in order],
                   years=np.asarray(years, dtype=np.int32)[order],
                   genres=[genres[i] for i in order], ratings=ratings, tags=tags, users=users)


def _ratings_from(data: np.ndarray, user: str, movie: str) -> Ratings:
  return Ratings(user_ids=data[user].copy(), movie_ids=data[movie].copy(),
                 values=data["rating"].copy(), timestamps=data["timestamp"].copy())


def _embedded_dir() -> pathlib.Path:
  path = pathlib.Path(str(importlib.resources.files("eagle_jax.world").joinpath("embedded")))
  if not (path / "movies.csv.gz").is_file():
    raise EagleError(f"embedded MovieLens data missing at {path}: reinstall eagle_jax")
  return path


def _load_directory(directory: pathlib.Path, name: str) -> Catalogue:
  """Detects the GroupLens format from the files present."""

  def find(file: str) -> pathlib.Path | None:
    for candidate in (directory / file, directory / f"{file}.gz"):
      if candidate.is_file():
        return candidate
    return None

  if find("movies.csv") and find("ratings.csv"):
    catalogue = _load_latest(name, find("movies.csv"), find("ratings.csv"), find("tags.csv"))
    _check_declared_count(catalogue, find("ratings.csv"), find("README.txt"),
                          r"contains ([\d,]+) ratings")
    return catalogue
  if find("u.data") and find("u.item"):
    genre_file = find("u.genre")
    if genre_file is None:
      raise EagleError(f"{directory}: ml-100k directory without u.genre; expected {_ML100K_FILES}")
    catalogue = _load_100k(name, find("u.data"), find("u.item"), genre_file, find("u.user"))
    _check_declared_count(catalogue, find("u.data"), find("u.info"), r"^(\d+) ratings")
    return catalogue
  names = sorted(p.name for p in directory.iterdir())
  present = ", ".join(names[:8]) + (f" (+{len(names) - 8} more)" if len(names) > 8 else "")
  raise EagleError(f"{directory}: not a MovieLens directory; expected {_LATEST_FILES} or "
                   f"{_ML100K_FILES}; found {present or 'nothing'}")


def _check_declared_count(catalogue: Catalogue, ratings_file: pathlib.Path,
                          declaration: pathlib.Path | None, pattern: str) -> None:
  """A ratings file cut at a line boundary parses cleanly: GroupLens states the count in the
  directory (README.txt, u.info), so a shorter file is caught (no statement: no check)."""
  if declaration is None:
    return
  with _open_text(declaration, "latin-1") as f:
    found = re.search(pattern, f.read(), re.MULTILINE)
  if found is None:
    return
  declared = int(found.group(1).replace(",", ""))
  if len(catalogue.ratings) != declared:
    raise EagleError(f"{ratings_file}: {len(catalogue.ratings)} ratings, but {declaration.name} "
                     f"says {declared}: the file is incomplete or not this dataset's")


def _load_latest(name: str, movies_file: pathlib.Path, ratings_file: pathlib.Path,
                 tags_file: pathlib.Path | None) -> Catalogue:
  ids, titles, years, genres = [], [], [], []
  for _, (movie_id, raw_title, genre_field) in read_records(movies_file, _MOVIES_COLUMNS,
                                                            unique="movieId"):
    title, year = _split_title(raw_title)
    ids.append(movie_id)
    titles.append(title)
    years.append(year)
    genres.append(_real_genres(genre_field.split("|")))
  if not ids:
    raise EagleError(f"{movies_file}: no movies")
  known_ids = np.sort(np.asarray(ids, dtype=np.int64))

  data = _read_numeric(ratings_file, _RATINGS_COLUMNS, header=True, delimiter=",")
  ratings = _ratings_from(data, "userId", "movieId")
  _check_ratings(ratings_file, ratings, known_ids, header=True, column="movieId",
                 movies_file=movies_file.name)

  tags = None
  if tags_file is not None:
    movie_set = set(ids)
    tag_users, tag_movies, tag_texts = [], [], []
    for line, (user_id, movie_id, tag, _) in read_records(tags_file, _TAGS_COLUMNS):
      if movie_id not in movie_set:
        raise EagleError(f"{tags_file} line {line}: movieId {movie_id} is not in "
                         f"{movies_file.name}")
      tag_users.append(user_id)
      tag_movies.append(movie_id)
      tag_texts.append(tag)
    tags = Tags(user_ids=np.asarray(tag_users, dtype=np.int64),
                movie_ids=np.asarray(tag_movies, dtype=np.int64), tags=tag_texts)
  return _assemble(name, ids, titles, years, genres, ratings, tags, users=None)


def _load_100k(name: str, data_file: pathlib.Path, item_file: pathlib.Path,
               genre_file: pathlib.Path, user_file: pathlib.Path | None) -> Catalogue:
  genre_names: dict[int, str] = {}
  for _, (genre, index) in read_records(genre_file, _U_GENRE_COLUMNS, header=False,
                                        delimiter="|", quoted=False, unique="index"):
    genre_names[index] = genre
  if sorted(genre_names) != list(range(len(genre_names))):
    raise EagleError(f"{genre_file}: genre indices {sorted(genre_names)} are not 0..N-1")
  flags = [genre_names[i] for i in range(len(genre_names))]

  # u.item is ISO-8859-1 (GroupLens' README); titles like "Café" are not valid UTF-8.
  item_columns = _U_ITEM_LEADING + tuple((f"{g} flag", int) for g in flags)
  ids, titles, years, genres = [], [], [], []
  for _, values in read_records(item_file, item_columns, header=False, delimiter="|",
                                encoding="latin-1", quoted=False, unique="movie id"):
    movie_id, raw_title, release_date = values[:3]
    title, year = _split_title(raw_title)
    if not year and re.fullmatch(r"\d{2}-\w{3}-\d{4}", release_date.strip()):
      year = int(release_date.strip()[-4:])
    ids.append(movie_id)
    titles.append(title)
    years.append(year)
    genres.append(_real_genres(g for g, flag in zip(flags, values[5:]) if flag))
  if not ids:
    raise EagleError(f"{item_file}: no movies")

  data = _read_numeric(data_file, _U_DATA_COLUMNS, header=False, delimiter="\t")
  ratings = _ratings_from(data, "user id", "item id")
  _check_ratings(data_file, ratings, np.sort(np.asarray(ids, dtype=np.int64)), header=False,
                 column="item id", movies_file=item_file.name)

  users = None
  if user_file is not None:
    rows = sorted(values for _, values in read_records(
        user_file, _U_USER_COLUMNS, header=False, delimiter="|", encoding="latin-1",
        quoted=False))
    users = Users(user_ids=np.asarray([r[0] for r in rows], dtype=np.int64),
                  ages=np.asarray([r[1] for r in rows], dtype=np.int32),
                  genders=[r[2] for r in rows], occupations=[r[3] for r in rows])
  return _assemble(name, ids, titles, years, genres, ratings, tags=None, users=users)


def _load_tfds(spec: str) -> Catalogue:
  """`movielens/<size>[-ratings|-movies]`: movies from the -movies config, ratings from
  -ratings. tfds prepares both with TensorFlow, downloading from GroupLens."""
  dataset, _, config = spec.partition("/")
  size = config.removesuffix("-ratings").removesuffix("-movies")
  if dataset != "movielens" or size not in TFDS_SIZES:
    raise EagleError(f"tfds source {TFDS_PREFIX}{spec}: expected {TFDS_PREFIX}movielens/"
                     f"<size>-ratings with size one of {', '.join(TFDS_SIZES)}")
  # Checked first: without TF, tfds would spend minutes retrying the download first.
  if importlib.util.find_spec("tensorflow") is None:
    raise EagleError(_NO_TF)
  import tensorflow_datasets as tfds
  # Registers the builder even when an unrelated tfds module fails to import (stack.md §4).
  import tensorflow_datasets.structured.movielens
  from tqdm import tqdm

  def prepared(config_name: str):
    builder = tfds.builder(f"movielens/{config_name}")
    builder.download_and_prepare()
    return builder

  movies_builder = prepared(f"{size}-movies")
  genre_names = movies_builder.info.features["movie_genres"].feature.names
  ids, titles, years, genres = [], [], [], []
  for ex in tqdm(tfds.as_numpy(movies_builder.as_dataset(split="train")), desc="tfds movies"):
    title, year = _split_title(ex["movie_title"].decode("utf-8"))
    ids.append(int(ex["movie_id"]))
    titles.append(title)
    years.append(year)
    genres.append(_real_genres(genre_names[g] for g in ex["movie_genres"]))

  keys = ("user_id", "movie_id", "user_rating", "timestamp")
  ratings_ds = prepared(f"{size}-ratings").as_dataset(split="train")
  ratings_ds = ratings_ds.map(lambda ex: {k: ex[k] for k in keys}).batch(1 << 20)
  parts = collections.defaultdict(list)
  for batch in tqdm(tfds.as_numpy(ratings_ds), desc="tfds ratings (1M/batch)"):
    for k in keys:
      parts[k].append(batch[k])
  ratings = Ratings(
      user_ids=np.concatenate(parts["user_id"]).astype(np.int64),
      movie_ids=np.concatenate(parts["movie_id"]).astype(np.int64),
      values=np.concatenate(parts["user_rating"]).astype(np.float32),
      timestamps=np.concatenate(parts["timestamp"]).astype(np.int64))
  return _assemble(f"movielens/{size}", ids, titles, years, genres, ratings, tags=None,
                   users=None)
