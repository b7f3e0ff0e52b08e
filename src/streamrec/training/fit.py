"""Read the event log as training data, and fit a model from scratch on it.

This is the glue between the store (events, items with text), the text
encoder and the model: it fixes the item vocabulary (every item with events,
then catalogue-only items, which the model can still score from text), and
:func:`refit` holds out each user's last item to pick the best epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from streamrec.evaluation.offline import evaluate
from streamrec.items import without_category
from streamrec.models.base import TrainingData
from streamrec.models.categories import CategoryHead
from streamrec.models.sasrec import SASRec, SASRecConfig
from streamrec.store import SequenceTable, Store
from streamrec.text import TextEncoder


@dataclass
class PreparedData:
    """Training data coded over ``items``; ``texts[i]`` is what the encoder reads for item ``i``."""

    data: TrainingData
    users: list[str]
    items: list[str]
    texts: list[str]
    through_offset: int
    offsets: list[np.ndarray]  # per user: each event's log offset

    def through(self, offset: int, *, learn_after: int | None = None) -> PreparedData:
        """The events up to log ``offset``, with the same codes, without reading the log again.

        Users with no event by then are left out, as :func:`prepare` would;
        ``learn_after`` marks the events after that offset as the ones to learn.
        """
        keep = [o <= offset for o in self.offsets]
        users = [u for u, k in enumerate(keep) if k.any()]
        pick = lambda arrays: None if arrays is None else [arrays[u][keep[u]] for u in users]  # noqa: E731
        offsets = pick(self.offsets) or []
        data = replace(
            self.data,
            sequences=pick(self.data.sequences) or [],
            timestamps=pick(self.data.timestamps),
            event_types=pick(self.data.event_types),
            values=pick(self.data.values),
            learn=None if learn_after is None else [o > learn_after for o in offsets],
        )
        last = max((int(o[-1]) for o in offsets), default=0)
        return PreparedData(data, [self.users[u] for u in users], self.items, self.texts, last, offsets)


def training_data(table: SequenceTable, n_items: int) -> TrainingData:
    """Split a :class:`SequenceTable` into one array per user (already time-ordered)."""
    bounds = table.user_ptr
    cut = lambda array: [array[bounds[u] : bounds[u + 1]] for u in range(len(table.users))]  # noqa: E731
    return TrainingData(
        sequences=[s.astype(np.int64) for s in cut(table.item_codes)],
        n_items=n_items,
        timestamps=cut(table.timestamps),
        event_types=[t.astype(np.int64) for t in cut(table.event_types)],
        values=cut(table.values),
        type_names=table.type_names,
    )


def prepare(
    store: Store,
    through_offset: int | None = None,
    *,
    vocabulary: list[str] | None = None,
    type_names: list[str] | None = None,
    learn_after: int | None = None,
) -> PreparedData:
    """The log through ``through_offset`` as training data, items coded in a fixed order.

    ``vocabulary`` (an earlier version's items) keeps its codes; items it does
    not know follow, those with events first, then catalogue-only ones, so a
    grown model's new rows line up. ``type_names`` codes event types the same
    way (types it does not know get -1). ``learn_after`` marks the events with
    a larger offset as the ones to learn (an incremental update).
    """
    table = store.log.sequences(through_offset)
    catalog = {item.item_id: item for item in store.catalog.all()}
    items = list(vocabulary or [])
    known = set(items)
    for item_id in [*table.items, *catalog]:
        if item_id not in known:
            known.add(item_id)
            items.append(item_id)
    if vocabulary is not None or type_names is not None:
        index = {item_id: code for code, item_id in enumerate(items)}
        codes = np.array([index[i] for i in table.items], dtype=np.int32)
        names = list(type_names) if type_names is not None else table.type_names
        kinds = np.array(
            [names.index(n) if n in names else -1 for n in table.type_names] or [0], dtype=np.int8
        )
        table = replace(
            table,
            items=items,
            item_codes=codes[table.item_codes] if len(table) else table.item_codes,
            event_types=kinds[table.event_types] if len(table) else table.event_types,
            type_names=names,
        )
    texts = [catalog[i].text if i in catalog else i for i in items]
    offset = int(table.offsets.max()) if len(table) else 0
    data = training_data(table, len(items))
    bounds = table.user_ptr
    offsets = [table.offsets[bounds[u] : bounds[u + 1]] for u in range(len(table.users))]
    if learn_after is not None:
        data.learn = [o > learn_after for o in offsets]
    return PreparedData(data, table.users, items, texts, offset, offsets)


# Ranking every held-out user over the whole catalogue once an epoch: up to this many scores.
VALIDATION_SCORES = 1 << 30
VALIDATION_MIN_USERS = 1000


def validation_users(held: list[int], n_items: int, *, seed: int = 0) -> list[int]:
    """The users whose last item picks the epoch: all of them, or a fixed sample on a large catalogue.

    Ranking 40,000 users over a million items is 4·10^10 scores an epoch, longer than
    the training itself; a seeded sample of at least :data:`VALIDATION_MIN_USERS` keeps
    each validation within :data:`VALIDATION_SCORES` (Beauty's 22k × 12k stays whole).
    """
    room = max(VALIDATION_MIN_USERS, VALIDATION_SCORES // max(n_items, 1))
    if len(held) <= room:
        return held
    chosen = np.random.default_rng(seed).choice(len(held), size=room, replace=False)
    return [held[i] for i in np.sort(chosen)]


def refit(
    data: TrainingData,
    config: SASRecConfig,
    text: np.ndarray | None,
    *,
    texts: Sequence[str] | None = None,
    progress: bool = True,
) -> tuple[SASRec, dict[str, float]]:
    """The product's fit from scratch: all but each user's last item trains, the last picks the epoch.

    On a large catalogue only :func:`validation_users` are ranked, for the epoch and the metrics.

    ``texts`` (every item's text) lets a ``text_tuning="lora"`` model train its language model.
    Used by ``streamrec train``, by a drift or ``full`` update, and by the streaming
    benchmark's ``full`` row alike. Returns the model and its metrics on those last items.
    """
    drops = [1 if len(s) >= 2 else 0 for s in data.sequences]
    train = data.without_last(drops)
    held = validation_users([u for u, d in enumerate(drops) if d], data.n_items)
    histories = [train.sequences[u] for u in held]
    targets = np.array([data.sequences[u][-1] for u in held], dtype=np.int64)
    model = SASRec(config, text, texts).fit(
        train, valid=(histories, targets) if held else None, progress=progress
    )
    metrics = evaluate(model, histories, targets, unfiltered=False) if held else {}
    return model, metrics


def category_head(
    store: Store, items: list[str], model: SASRec, encoder: TextEncoder, *, progress: bool = False
) -> CategoryHead | None:
    """A category head for ``model``'s items (codes = ``items``), or None without two categories.

    It reads each item's text without its category (:func:`without_category`: the label must
    not be in the input) and the model's ID row for it.
    """
    catalog = {item.item_id: item for item in store.catalog.all()}
    labels = [catalog[i].category if i in catalog else "" for i in items]
    if len(set(labels) - {""}) < 2:
        return None
    texts = [without_category(catalog[i]).text if i in catalog else i for i in items]
    return CategoryHead.fit(encoder.encode(texts, progress=progress), model.id_rows(), labels)


def item_text(
    prepared: PreparedData, encoder: TextEncoder | None, *, progress: bool = True
) -> np.ndarray | None:
    """Every item's text embedding (rows = item codes), or None without an encoder (ID tower)."""
    return None if encoder is None else encoder.encode(prepared.texts, progress=progress)
