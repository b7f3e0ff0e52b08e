"""Tiny stand-ins for the shared benchmark datasets, in the same on-disk layout as ``../shared/datasets``.

:func:`build_shared_datasets` writes one root folder holding

* ``ml-100k/``: ``u.data`` (TAB: user item rating timestamp), ``u.item`` (``|``, 19 genre flags), ``u.genre``
* ``ml-1m/``: ``movies.dat`` (``MovieID::Title (Year)::Genres``), ``ratings_users1-2999.dat.gz``
  (``UserID::MovieID::Rating::Timestamp``) and ``ratings_all_no_timestamp.dat.gz`` (three fields)
* ``ml-1m-sasrec/``: ``ml-1m.txt.gz`` (``user item``, SASRec's dense ids, each user's items in time order)
  with ``sas_to_original_items.txt`` / ``sas_to_original_users.txt``; titles come from ``../ml-1m/movies.dat``
* ``amazon-beauty-s3rec/``: ``Beauty.txt`` (``user item1 item2 ...``) and ``Beauty_item_titles.tsv``

so every ``--data ../shared/datasets/...`` of the README (and ``--dataset ml-1m-ts --data <root>``, which
reads ``<root>/ml-1m``) finds what it would find in the real folders, only a few hundred events of it.
Users walk a chain of items (item i → i+1) with some noise, so the models have something to learn.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

GENRES = ("Action", "Comedy", "Drama", "Sci-Fi", "Romance", "Thriller")
WORDS = ("star", "river", "night", "garden", "storm", "city", "ghost", "summer", "iron", "dream")
START = 978_300_000  # ML-1M's era, in epoch seconds


def _histories(users: int, items: int, seed: int) -> list[list[tuple[int, int]]]:
    """Per user, ``(item, timestamp)`` pairs in time order: distinct items, mostly along the chain."""
    rng = np.random.default_rng(seed)
    histories = []
    for _ in range(users):
        length = int(rng.integers(8, 16))
        item, walk = int(rng.integers(items)), []
        while len(walk) < length:
            if item not in walk:
                walk.append(item)
            item = (item + 1) % items if rng.random() < 0.85 else int(rng.integers(items))
        # Users arrive at different times over 60 days, so periods of the stream see new users and items.
        first = START + int(rng.integers(0, 40 * 86_400))
        times = first + np.sort(rng.integers(0, 20 * 86_400, size=length))
        histories.append([(i + 1, int(t)) for i, t in zip(walk, times, strict=True)])
    return histories


def _title(item: int) -> str:
    return f"{WORDS[item % len(WORDS)].title()} of the {WORDS[(item * 7) % len(WORDS)]} {item}"


def _genres(item: int) -> list[str]:
    return [GENRES[item % len(GENRES)], GENRES[(item // 3) % len(GENRES)]]


def _gz(path: Path, lines: list[str]) -> None:
    with gzip.open(path, "wt", encoding="iso-8859-1") as handle:
        handle.writelines(line + "\n" for line in lines)


def _ml100k(folder: Path, users: int, items: int) -> None:
    folder.mkdir(parents=True)
    all_genres = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime")
    all_genres += ("Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery")
    all_genres += ("Romance", "Sci-Fi", "Thriller", "War", "Western")
    (folder / "u.genre").write_text("".join(f"{g}|{i}\n" for i, g in enumerate(all_genres)) + "\n")
    rows = []
    for item in range(1, items + 1):
        flags = "|".join("1" if g in _genres(item) else "0" for g in all_genres)
        rows.append(f"{item}|{_title(item)} (1995)|01-Jan-1995||http://example.org/{item}|{flags}\n")
    (folder / "u.item").write_bytes("".join(rows).encode("iso-8859-1"))
    events = [
        (ts, f"{user}\t{item}\t{1 + (item + user) % 5}\t{ts}")
        for user, history in enumerate(_histories(users, items, seed=1), start=1)
        for item, ts in history
    ]
    # Like the real u.data, the file is not in time order.
    (folder / "u.data").write_text("".join(line + "\n" for _, line in sorted(events, key=lambda e: e[1])))


def _ml1m(folder: Path, users: int, items: int) -> list[list[tuple[int, int]]]:
    folder.mkdir(parents=True)
    movies = [f"{item}::{_title(item)} (1996)::{'|'.join(_genres(item))}" for item in range(1, items + 1)]
    (folder / "movies.dat").write_bytes("".join(m + "\n" for m in movies).encode("iso-8859-1"))
    histories = _histories(users, items, seed=2)
    with_ts = [
        f"{user}::{item}::{1 + (item * user) % 5}::{ts}"
        for user, history in enumerate(histories, start=1)
        for item, ts in history
    ]
    _gz(folder / "ratings_users1-2999.dat.gz", with_ts)
    _gz(folder / "ratings_all_no_timestamp.dat.gz", [line.rpartition("::")[0] for line in with_ts])
    return histories


def _ml1m_sasrec(folder: Path, histories: list[list[tuple[int, int]]]) -> None:
    """SASRec's file renumbers users and items densely in order of appearance, with maps back."""
    folder.mkdir(parents=True)
    items: dict[int, int] = {}
    lines = []
    for sas_user, history in enumerate(histories, start=1):
        for item, _ in history:
            lines.append(f"{sas_user} {items.setdefault(item, len(items) + 1)}")
    _gz(folder / "ml-1m.txt.gz", lines)
    (folder / "sas_to_original_items.txt").write_text("".join(f"{s} {o}\n" for o, s in items.items()))
    users = "".join(f"{s} {len(histories) + 1 - s}\n" for s in range(1, len(histories) + 1))
    (folder / "sas_to_original_users.txt").write_text(users)


def _beauty(folder: Path, users: int, items: int) -> None:
    folder.mkdir(parents=True)
    histories = _histories(users, items, seed=3)
    lines = [f"{user} " + " ".join(str(item) for item, _ in h) for user, h in enumerate(histories, start=1)]
    (folder / "Beauty.txt").write_text("".join(line + "\n" for line in lines))
    titles = [
        f"{item}\tB{item:09d}\t{_title(item).replace('of the', 'lotion,')}" for item in range(1, items + 1)
    ]
    (folder / "Beauty_item_titles.tsv").write_text("item_id\tasin\ttitle\n" + "\n".join(titles) + "\n")


def build_shared_datasets(root: Path, *, users: int = 40, items: int = 50) -> Path:
    """Write the four dataset folders under ``root`` (a stand-in for ``../shared/datasets``)."""
    _ml100k(root / "ml-100k", users, items)
    _ml1m_sasrec(root / "ml-1m-sasrec", _ml1m(root / "ml-1m", users, items))
    _beauty(root / "amazon-beauty-s3rec", users, items)
    return root
