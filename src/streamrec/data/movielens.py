"""MovieLens folders as GroupLens ships them: the 100K layout (``u.data``, ``u.item``) and the 1M one.

* 100K: ``u.data`` is TAB-separated ``user item rating timestamp``; ``u.item``
  is ``|``-separated with 19 genre flags in ``u.genre`` order.
* 1M: ``ratings.dat`` is ``UserID::MovieID::Rating::Timestamp``; ``movies.dat``
  is ``MovieID::Title (Year)::Genre1|Genre2``. Our copy of ML-1M has no full
  ``ratings.dat``, so the ratings file is chosen from :data:`DEFAULT_RATINGS`
  in order, or named with ``ratings_file=``. A three-field file
  (``UserID::MovieID::Rating``) gives events without a ``timestamp``.

All files are ISO-8859-1 (titles such as "Misérables"). Events keep the
file's line order, which is *not* time order in either release.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from streamrec.data.base import Dataset, LocatedRecord
from streamrec.data.files import INVALID_KEY, open_text

ENCODING = "iso-8859-1"
# Tried in this order when no ratings_file is given (a 100K folder uses u.data).
DEFAULT_RATINGS: tuple[str, ...] = ("ratings.dat", "ratings.dat.gz", "ratings_users1-2999.dat.gz")
# u.genre's order, used when the folder lacks u.genre.
ML100K_GENRES: tuple[str, ...] = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
_YEAR_IN_TITLE = re.compile(r"\((\d{4})\)\s*$")
_RELEASE_YEAR = re.compile(r"(\d{4})\s*$")


def _choose_ratings(folder: Path, ratings_file: str | Path | None) -> tuple[Path, str]:
    """The ratings file to read, and a note on why it was chosen."""
    if ratings_file is not None:
        chosen = Path(ratings_file)
        chosen = chosen if chosen.is_absolute() else folder / chosen
        if not chosen.is_file():
            raise ValueError(f"{chosen}: ratings file not found")
        return chosen, f"ratings file: {chosen.name} (given)"
    if (folder / "u.data").is_file():
        return folder / "u.data", "ratings file: u.data"
    for name in DEFAULT_RATINGS:
        if (folder / name).is_file():
            skipped = DEFAULT_RATINGS[: DEFAULT_RATINGS.index(name)]
            why = f"; not present: {', '.join(skipped)}" if skipped else ""
            return folder / name, f"ratings file: {name}{why}"
    others = sorted(p for p in folder.glob("ratings*.dat*") if p.is_file())
    if len(others) == 1:
        return others[0], f"ratings file: {others[0].name} (the only ratings*.dat* file)"
    if others:
        raise ValueError(
            f"{folder}: several ratings files and none of {', '.join(DEFAULT_RATINGS)}; "
            f"pick one with ratings_file= ({', '.join(p.name for p in others)})"
        )
    raise ValueError(
        f"{folder}: no MovieLens ratings file (expected u.data, {', '.join(DEFAULT_RATINGS)} "
        "or another ratings*.dat*)"
    )


def _sniff(path: Path) -> tuple[str | None, int]:
    """The separator (``::``, TAB, or None for any whitespace) and field count of the first line."""
    with open_text(path, ENCODING) as handle:
        for line in handle:
            text = line.strip()
            if text:
                sep = "::" if "::" in text else "\t" if "\t" in text else None
                return sep, len(text.split(sep))
    return "::", 4


def _rating_events(path: Path, sep: str | None, width: int) -> Iterator[LocatedRecord]:
    name = path.name
    shown = "TAB" if sep == "\t" else repr(sep) if sep else "whitespace"
    with open_text(path, ENCODING) as handle:
        for number, line in enumerate(handle, start=1):
            text = line.strip()
            if not text:
                continue
            parts = text.split(sep)
            if len(parts) != width:
                problem = f"expected {width} {shown}-separated fields, got {len(parts)}"
                yield f"{name} line {number}", {INVALID_KEY: problem}
                continue
            # Numbers become ints; anything else is passed on for validation to name.
            try:
                value: Any = int(parts[2])
            except ValueError:
                value = parts[2]
            record = {"user_id": parts[0], "item_id": parts[1], "event_type": "rating", "value": value}
            if width == 4:
                try:
                    record["timestamp"] = int(parts[3])
                except ValueError:
                    record["timestamp"] = parts[3]
            yield f"{name} line {number}", record


def _year(title: str, release_date: str = "") -> int | None:
    match = _YEAR_IN_TITLE.search(title) or _RELEASE_YEAR.search(release_date)
    return int(match.group(1)) if match else None


def _item(movie_id: str, title: str, genres: list[str], year: int | None) -> dict[str, Any]:
    record: dict[str, Any] = {"item_id": movie_id, "title": title}
    attributes: dict[str, Any] = {}
    if genres:
        record["category"] = ", ".join(genres)
        attributes["genres"] = genres
    if year is not None:
        attributes["year"] = year
    if attributes:
        record["attributes"] = attributes
    return record


def _genre_names(folder: Path) -> tuple[str, ...]:
    path = folder / "u.genre"
    if not path.is_file():
        return ML100K_GENRES
    pairs = []
    with path.open(encoding=ENCODING) as handle:
        for line in handle:
            name, sep, index = line.strip().rpartition("|")
            if sep and index.isdigit():
                pairs.append((int(index), name))
    return tuple(name for _, name in sorted(pairs))


def _items_100k(path: Path, genres: tuple[str, ...]) -> Iterator[LocatedRecord]:
    width = 5 + len(genres)
    with path.open(encoding=ENCODING) as handle:
        for number, line in enumerate(handle, start=1):
            text = line.rstrip("\r\n")
            if not text.strip():
                continue
            parts = text.split("|")
            where = f"{path.name} line {number}"
            if len(parts) != width:
                yield where, {INVALID_KEY: f"expected {width} '|'-separated fields, got {len(parts)}"}
                continue
            flagged = [genre for genre, flag in zip(genres, parts[5:], strict=True) if flag.strip() == "1"]
            yield where, _item(parts[0], parts[1], flagged, _year(parts[1], parts[2]))


def read_movies_dat(path: Path) -> Iterator[LocatedRecord]:
    """Item records of an ML-1M style ``movies.dat`` (also used to title SASRec's ML-1M)."""
    with open_text(path, ENCODING) as handle:
        for number, line in enumerate(handle, start=1):
            text = line.rstrip("\r\n")
            if not text.strip():
                continue
            movie_id, sep, rest = text.partition("::")
            title, sep2, genre_text = rest.rpartition("::")
            where = f"{path.name} line {number}"
            if not sep or not sep2:
                yield where, {INVALID_KEY: "expected MovieID::Title::Genres"}
                continue
            genres = [g for g in genre_text.split("|") if g and g != "(no genres listed)"]
            yield where, _item(movie_id, title, genres, _year(title))


def read_movielens(path: str | Path, ratings_file: str | Path | None = None) -> Dataset:
    """A MovieLens folder (or its ratings file): rating events in file order, and all its movies.

    ``ratings_file`` (a name in the folder, or a path) overrides the default
    choice, for instance ``"ratings_all_no_timestamp.dat.gz"``.
    """
    path = Path(path)
    if path.is_file():
        if ratings_file is not None:
            raise ValueError(f"{path}: give either a ratings file path or ratings_file=, not both")
        folder, ratings_file = path.parent, path
    elif path.is_dir():
        folder = path
    else:
        raise ValueError(f"{path}: no such file or directory")
    ratings, chosen_note = _choose_ratings(folder, ratings_file)
    sep, width = _sniff(ratings)
    if width not in (3, 4):
        raise ValueError(
            f"{ratings}: expected 3 or 4 fields per line (user, item, rating[, timestamp]), "
            f"the first line has {width}"
        )
    has_timestamps = width == 4
    is_100k = (folder / "u.data").is_file() or (folder / "u.item").is_file()
    items_path = next((folder / n for n in ("u.item", "movies.dat") if (folder / n).is_file()), None)
    genres = _genre_names(folder) if items_path is not None and items_path.name == "u.item" else None

    def events() -> Iterator[LocatedRecord]:
        return _rating_events(ratings, sep, width)

    def items() -> Iterator[LocatedRecord]:
        if items_path is None:
            return iter(())
        return read_movies_dat(items_path) if genres is None else _items_100k(items_path, genres)

    notes = [chosen_note]
    if has_timestamps:
        notes.append("events kept in the file's line order, which is not time order")
    else:
        notes.append("no timestamps: order kept from the source")
    if items_path is None:
        notes.append("no u.item or movies.dat: no titles")
    if folder.name.lower().startswith("ml-"):
        name = "movielens-" + folder.name[3:]
    else:
        name = "movielens-100k" if is_100k else f"movielens-{folder.name}"
    return Dataset(
        name=name,
        events=events,
        items=items,
        has_timestamps=has_timestamps,
        source_files=[ratings],
        notes=notes,
    )
