"""A user's data rights: forget them (erasure), and export what the home holds about them (access).

**Forget** deletes the user's events and the impressions shown to them, and records the
request, in one store transaction (a crash leaves the before or the after state), then
scrubs the backend's files (SQLite: deleted rows are zeroed and the WAL emptied). Other
events keep their offsets and no offset is ever given again, so every model version's
``trained_through_offset`` still means what it meant. The record keeps when, who asked,
how many rows went, the span of offsets they held and the model versions trained on any of
them, never the user id nor the data. A forgotten user's later events start a fresh history.

**Unlearn** replaces a live version that a forgotten user's events trained by a refit from
scratch on the log without them (with the live version's model settings), promotes it, and
then erases every version a forget names (weights and all: rollback cannot bring them back).
``streamrec unlearn`` runs it now; the worker runs it once the oldest pending forget is
``privacy.unlearn_after_seconds`` old, so forgets close together share one refit.

**Retention** (``privacy.retention_days``) erases the events and impressions older than that,
the same way and with the same record (``requested_by = "retention"``); the worker purges on a
schedule, ``streamrec purge`` at once. A purge does not unlearn: the versions trained on those
events keep what they learned until a refit replaces them (a refit per daily purge would cost
what continual learning saves).

**Export** gives the user's events and what the home derived from them (event counts by
type, recent items, top categories) as JSON lines.

Minimisation at ingestion (``context_fields``, pseudonymised user ids) lives in
:mod:`streamrec.events` and :mod:`streamrec.pseudonyms`.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from streamrec.faults import FORGET_CRASH_POINT, crash_point
from streamrec.home import Home
from streamrec.pseudonyms import as_stored
from streamrec.registry import Registry
from streamrec.store import Store
from streamrec.store.base import RETENTION, ForgetRecord

RECENT_ITEMS = 20
SECONDS_PER_DAY = 86_400
TOP_CATEGORIES = 5


def forget_user(home: Home, user_id: str, *, requested_by: str) -> ForgetRecord:
    """Erase ``user_id`` from the home's store; see the module docstring."""
    with home.open_store() as store:
        stored_id = home.settings.privacy.user_key()(user_id)
        return forget_in(store, stored_id, requested_by, trained_since(home.registry))


def trained_since(registry: Registry) -> Callable[[int], list[str]]:
    """For :func:`forget_in`: the stored versions whose training reached a given log offset."""
    versions = registry.versions()
    return lambda first: [v.version for v in versions if v.learned_through_offset >= first]


def forget_in(
    store: Store, user_id: str, requested_by: str, trained_on: Callable[[int], Iterable[str]]
) -> ForgetRecord:
    """Forget ``user_id`` (as stored: pseudonymised, if the home does) in ``store``;
    ``trained_on(first_offset)`` names the versions that learned any event from that offset on."""
    if not user_id:
        raise ValueError("user_id: must not be empty")
    return _erase(store, requested_by, trained_on, store.log.forget, store.impressions.forget, user_id)


def purge_expired(home: Home, *, days: float | None = None, now: float | None = None) -> ForgetRecord | None:
    """Erase the events and impressions older than ``days`` (default ``privacy.retention_days``), as
    a forget erases a user's (one transaction, offsets kept, files scrubbed); recorded when anything
    went. None when the home keeps events without a limit, or nothing had expired."""
    days = home.settings.privacy.retention_days if days is None else days
    if days is None:
        return None
    cutoff = (time.time() if now is None else now) - days * SECONDS_PER_DAY
    with home.open_store() as store:
        record = _erase(
            store,
            RETENTION,
            trained_since(home.registry),
            store.log.purge_before,
            store.impressions.purge_before,
            cutoff,
            record_empty=False,
        )
    return record if record.events or record.impressions else None


def _erase(
    store: Store,
    requested_by: str,
    trained_on: Callable[[int], Iterable[str]],
    delete_events: Callable[[Any], tuple[int, int, int]],
    delete_impressions: Callable[[Any], int],
    which: Any,
    *,
    record_empty: bool = True,
) -> ForgetRecord:
    """Delete ``which`` events and impressions and record it, in one transaction; then scrub."""
    with store.transaction():
        events, first, last = delete_events(which)
        crash_point(FORGET_CRASH_POINT)
        impressions = delete_impressions(which)
        record = ForgetRecord(
            uuid.uuid4().hex,
            time.time(),
            requested_by,
            events,
            impressions,
            first,
            last,
            tuple(trained_on(first)) if events else (),
        )
        if record_empty or events or impressions:
            store.log.record_forget(record)
    store.database.scrub()
    return record


@dataclass
class Unlearned:
    """What :func:`unlearn` did: the clean version it made live (None when the live one was clean),
    how it got it, and the versions it erased."""

    live: str | None
    how: str
    erased: list[str]
    seconds: float


def pending(store: Store, registry: Registry) -> tuple[list[str], float | None]:
    """The stored versions a forget names, and when the oldest of those forgets was asked."""
    records = store.log.forget_records()
    stored = {info.version for info in registry.versions()}
    waiting = [r for r in records if r.to_unlearn and stored & set(r.versions)]
    names = sorted({v for r in waiting for v in r.versions} & stored)
    return names, min((r.timestamp for r in waiting), default=None)


def unlearn(home: Home, *, progress: bool = False) -> Unlearned:
    """If the live version learned from a forgotten user, make one that never did live; then erase
    every version that did.

    The exact and cheaper way first: when the live version's nearest ancestor that learned from
    none of them is still stored, it goes live and the updates since are redone from it as one
    update (which reads the log as it is now, without them; the guardrail judges it as any
    update). Without such an ancestor, a refit from scratch with the live version's settings.
    """
    from streamrec.models.sasrec import SASRec
    from streamrec.text.encoder import DEFAULT_TEXT_MODEL
    from streamrec.training.continual import train_and_register, update_locked

    started = time.perf_counter()
    with home.update_lock():  # no update may start from a version about to go
        registry, made, how = home.registry, None, "the live version never saw them"
        with home.open_store() as store:
            tainted, _ = pending(store, registry)
        live = registry.live()
        ancestor = clean_ancestor(registry, live, set(tainted)) if live in tainted else None
        if ancestor is not None:
            registry.promote(ancestor)
            outcome = update_locked(home, progress=progress)
            made = registry.live()
            how = f"an update from {ancestor}, which never saw them: {outcome.reason}"
        elif live in tainted:
            info = registry.get(live)
            config = SASRec.load(registry.path(live)).config
            made = train_and_register(
                home,
                config,
                text_model=info.text_model or DEFAULT_TEXT_MODEL,
                rerank="lm" if info.reranker else "none",
                rerank_minutes=info.reranker.get("minutes"),
                progress=progress,
            ).version
            how = "a refit without them"
        erased = registry.erase(tainted)
    return Unlearned(made, how, erased, round(time.perf_counter() - started, 2))


def clean_ancestor(registry: Registry, version: str | None, tainted: set[str]) -> str | None:
    """The nearest stored ancestor of ``version`` outside ``tainted`` (None: a fit from scratch, or
    an ancestor pruned, on the way)."""
    stored = {info.version: info for info in registry.versions()}
    while version in stored:
        version = stored[version].parent
        if version in stored and version not in tainted:
            return version
    return None


def record_json(record: ForgetRecord) -> dict[str, Any]:
    return {**asdict(record), "versions": list(record.versions)}


def export_user(
    store: Store, user_id: str, user_key: Callable[[str], str] = as_stored
) -> Iterator[dict[str, Any]]:
    """The user's events (oldest first, as stored: ``user_key(user_id)`` is their stored id), then
    one ``derived`` line; ``LookupError`` when the log holds no event of theirs."""
    logged = store.log.user_events(user_key(user_id))
    if not logged:
        raise LookupError(f"no events of user {user_id!r}")
    for entry in logged:
        yield {"kind": "event", "offset": entry.offset, **asdict(entry.event)}
    categories: Counter[str] = Counter()
    for entry in logged:
        item = store.catalog.get(entry.event.item_id)
        categories[item.category if item and item.category else "(none)"] += 1
    yield {
        "kind": "derived",
        "user_id": user_id,
        "events": len(logged),
        "event_types": dict(Counter(entry.event.event_type for entry in logged)),
        "recent_items": [entry.event.item_id for entry in logged[-RECENT_ITEMS:]][::-1],
        "top_categories": [
            {"category": name, "events": n} for name, n in categories.most_common(TOP_CATEGORIES)
        ],
    }
