"""SASRec's ML-1M benchmark file: ``user item`` per line, each user's items in time order.

The file has SASRec's own dense ids and no timestamps or ratings. When the
folder holds ``sas_to_original_items.txt`` / ``sas_to_original_users.txt``
(``sas_id original_id`` per line), events carry the original MovieLens
UserID/MovieID instead, so they line up with the MovieLens readers and with
``movies.dat``, which gives the items their titles and genres. Items are
only yielded when they can be titled: SASRec ids alone say nothing an
encoder could read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from streamrec.data.base import Dataset, LocatedRecord
from streamrec.data.files import INVALID_KEY, open_text
from streamrec.data.movielens import read_movies_dat

INTERACTION_NAMES: tuple[str, ...] = ("ml-1m.txt", "ml-1m.txt.gz")
ITEM_MAP = "sas_to_original_items.txt"
USER_MAP = "sas_to_original_users.txt"


def _interactions_file(folder: Path) -> Path:
    for name in INTERACTION_NAMES:
        if (folder / name).is_file():
            return folder / name
    candidates = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.name.endswith((".txt", ".txt.gz")) and not p.name.startswith("sas_to_original_")
    )
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ValueError(f"{folder}: no SASRec interaction file (expected {' or '.join(INTERACTION_NAMES)})")
    raise ValueError(
        f"{folder}: no {INTERACTION_NAMES[0]} and several .txt files "
        f"({', '.join(p.name for p in candidates)}); open the one you mean"
    )


def _read_map(path: Path) -> dict[str, str]:
    mapping = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise ValueError(f"{path.name} line {number}: expected 'sas_id original_id'")
            mapping[parts[0]] = parts[1]
    return mapping


def _movies_file(folder: Path) -> Path | None:
    for candidate in (folder / "movies.dat", folder.parent / "ml-1m" / "movies.dat"):
        if candidate.is_file():
            return candidate
    return None


def read_sasrec(path: str | Path) -> Dataset:
    """The SASRec ML-1M folder (or its ``ml-1m.txt[.gz]``): events in file order, titled items."""
    path = Path(path)
    if path.is_file():
        folder, interactions = path.parent, path
    elif path.is_dir():
        folder = path
        interactions = _interactions_file(folder)
    else:
        raise ValueError(f"{path}: no such file or directory")
    item_map_path, user_map_path = folder / ITEM_MAP, folder / USER_MAP
    items_map = _read_map(item_map_path) if item_map_path.is_file() else None
    users_map = _read_map(user_map_path) if user_map_path.is_file() else None
    movies = _movies_file(folder) if items_map is not None else None
    name = interactions.name

    def events() -> Iterator[LocatedRecord]:
        with open_text(interactions) as handle:
            for number, line in enumerate(handle, start=1):
                parts = line.split()
                if not parts:
                    continue
                where = f"{name} line {number}"
                if len(parts) != 2:
                    yield where, {INVALID_KEY: f"expected 'user item', got {len(parts)} fields"}
                    continue
                user, item = parts
                if users_map is not None:
                    user = users_map.get(user, "")
                    if not user:
                        yield where, {INVALID_KEY: f"user {parts[0]} is not in {USER_MAP}"}
                        continue
                if items_map is not None:
                    item = items_map.get(item, "")
                    if not item:
                        yield where, {INVALID_KEY: f"item {parts[1]} is not in {ITEM_MAP}"}
                        continue
                yield where, {"user_id": user, "item_id": item, "event_type": "rating"}

    def items() -> Iterator[LocatedRecord]:
        if items_map is None or movies is None:
            return
        occurring = set()
        with open_text(interactions) as handle:
            for line in handle:
                parts = line.split()
                if len(parts) == 2:
                    occurring.add(parts[1])
        titled = {
            record["item_id"]: (where, record)
            for where, record in read_movies_dat(movies)
            if INVALID_KEY not in record
        }
        for sas_id, original in items_map.items():
            if sas_id in occurring:
                yield titled.get(original, (f"{ITEM_MAP} id {sas_id}", {"item_id": original}))

    notes = ["no timestamps: order kept from the source (each user's items are in time order)"]
    if items_map is not None and users_map is not None:
        notes.append(f"ids mapped back to MovieLens UserID/MovieID via {USER_MAP} and {ITEM_MAP}")
    elif items_map is not None or users_map is not None:
        present = ITEM_MAP if items_map is not None else USER_MAP
        notes.append(f"only {present} present: the other ids are SASRec's own")
    else:
        notes.append("no sas_to_original_*.txt maps: SASRec's own ids, no titles, no items")
    if items_map is not None:
        notes.append(f"titles and genres from {movies}" if movies else "no movies.dat: no titles, no items")
    stem = name.removesuffix(".gz").removesuffix(".txt")
    return Dataset(
        name=f"sasrec-{stem}",
        events=events,
        items=items,
        has_timestamps=False,
        source_files=[interactions] + [p for p in (user_map_path, item_map_path) if p.is_file()],
        notes=notes,
    )
