"""A home's model life: train from scratch, update, promote only what holds; and the same in memory.

:func:`train_and_register` (``streamrec train``) and :func:`run_update`
(``streamrec update``, the worker, ``POST /admin/update``) run the engine of
:mod:`streamrec.training.guard` on a home's log and keep the results in its
registry; :class:`GuardedLearner` runs the same engine on a stream in memory,
for the streaming benchmark. The update settings a fit tuned travel with the
versions (``VersionInfo.tuned``): every update reads its live version's.

In a home every step is safe to interrupt: nothing is visible until the
registry's atomic add, and the live pointer only moves in an atomic promote.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.config import UpdateSettings
from streamrec.faults import crash_point
from streamrec.home import Home
from streamrec.models.base import Recommender, TrainingData
from streamrec.models.reranker import LMReranker
from streamrec.models.sasrec import SASRec, SASRecConfig
from streamrec.registry import VersionInfo
from streamrec.text.encoder import DEFAULT_TEXT_MODEL
from streamrec.training.fit import PreparedData, category_head, item_text, prepare
from streamrec.training.guard import (
    Verdict,
    fit_and_tune,
    guarded_update,
    holdout_examples,
    replace_strategy,
    with_tuned,
)


def train_and_register(
    home: Home,
    config: SASRecConfig,
    *,
    text_model: str,
    rerank: str | None = None,
    rerank_minutes: float | None = None,
    promote: bool = True,
    progress: bool = True,
) -> VersionInfo:
    """Fit from scratch on the whole log (tuning the updates to come) and register it, live by default.

    ``rerank="lm"`` trains an LM reranker too, for ``rerank_minutes`` (defaults: the home's
    ``[model] rerank`` and ``rerank_minutes``).
    """
    started, wall = time.perf_counter(), time.time()
    config = replace(config, text_model=text_model)
    if config.dp_epsilon is not None and (rerank or home.settings.model.rerank) == "lm":
        raise ValueError("--rerank lm learns from held-out events without DP: drop it with --dp-epsilon")
    with home.open_store() as store:
        prepared = prepare(store)
    if not prepared.data.sequences:
        raise ValueError("the event log is empty: ingest events before training")
    uses_text = config.item_tower != "id"
    # No reference to the encoder outlives the encoding: its weights are not held through the fit.
    text = item_text(
        prepared, home.text_encoder(text_model, config.device) if uses_text else None, progress=progress
    )
    fitted = fit_and_tune(
        prepared.data,
        prepared.offsets,
        config,
        home.settings.update,
        text,
        texts=prepared.texts,
        progress=progress,
    )
    log = fitted.model.training_log
    reranker = None
    if (rerank or home.settings.model.rerank) == "lm":
        minutes = rerank_minutes or home.settings.model.rerank_minutes
        through = fitted.trained_through
        reranker = fit_reranker(fitted.model, prepared, through, text_model, None, minutes, progress)
    save, categories = saved_with_categories(
        home, fitted.model, prepared.items, text_model if uses_text else None, reranker, progress=progress
    )
    if forgotten_since(home, wall):
        raise ValueError("a user was forgotten while this fit ran, and it learned from them: train again")
    info = home.registry.add(
        save,
        prepared.items,
        {
            "status": "candidate",
            "trained_through_offset": fitted.trained_through,
            "strategy": "full",
            "metrics": {**fitted.metrics, "best_epoch": log.best_epoch if log else 0},
            "timings": {"train_seconds": round(time.perf_counter() - started, 2)},
            "text_model": text_model if uses_text else None,
            "update": {"tuning": fitted.tuning},
            "tuned": fitted.tuned,
            "categories": categories,
            "reranker": {} if reranker is None else reranker.report,
            "privacy": log.privacy if log else {},
        },
    )
    return home.registry.promote(info.version) if promote else info


def refit_privacy(verdict: Verdict) -> dict[str, Any]:
    log = verdict.candidate.training_log
    return log.privacy if verdict.strategy == "full" and log is not None else {}


def forgotten_since(home: Home, since: float) -> bool:
    """Whether a user with events was forgotten after ``since`` (wall clock): a model whose data was
    read before then may have learned from them, and the forget could not name it."""
    with home.open_store() as store:
        return any(record.timestamp >= since and record.to_unlearn for record in store.log.forget_records())


def fit_reranker(
    model: SASRec,
    prepared: PreparedData,
    trained_through: int,
    text_model: str,
    parent: Path | None,
    minutes: float,
    progress: bool,
) -> LMReranker:
    """An LM reranker for ``model``, learned from the events after ``trained_through`` (the ones
    the model did not learn), starting from the one saved in ``parent`` when there is one."""
    reranker = (LMReranker.load(parent) if parent is not None else None) or LMReranker(text_model)
    histories, targets = holdout_examples(prepared.data, [p > trained_through for p in prepared.offsets])
    reranker.fit(model, histories, targets, prepared.texts, minutes=minutes, progress=progress)
    reranker.report["read_through_offset"] = prepared.through_offset  # what a forget must look for
    return reranker


def saved_with_categories(
    home: Home,
    model: SASRec,
    items: list[str],
    text_model: str | None,
    reranker: LMReranker | None = None,
    *,
    progress: bool = False,
) -> tuple[Callable[[Path], None], dict[str, Any]]:
    """How to save ``model`` with a category head fitted for it (and ``reranker`` when it ranks
    better than the model alone), and the head's held-out report.

    No head for an ID-only model (it reads no text) or a catalogue without two categories.
    """
    head = None
    if text_model:
        with home.open_store() as store:
            head = category_head(store, items, model, home.text_encoder(text_model), progress=progress)

    def save(folder: Path) -> None:
        model.save(folder)
        if head is not None:
            head.save(folder)
        if reranker is not None and reranker.enabled:
            reranker.save(folder)

    return save, {} if head is None else head.report


@dataclass
class UpdateOutcome:
    """What an update of a home did: ``version`` is None when there was nothing to learn."""

    version: VersionInfo | None
    promoted: bool
    reason: str


def trailing_live_ndcg(versions: list[VersionInfo]) -> list[float]:
    """The live models' test-then-train NDCG@10 the updates recorded, oldest first."""
    return [v.guardrail["live_ndcg@10"] for v in versions if "live_ndcg@10" in v.guardrail]


def run_update(
    home: Home, *, strategy: str | None = None, promote: bool = True, progress: bool = True
) -> UpdateOutcome:
    """Learn the events after the live version's offset as a candidate, and promote it if it holds up."""
    with home.update_lock():
        return update_locked(home, strategy=strategy, promote=promote, progress=progress)


def update_locked(
    home: Home, *, strategy: str | None = None, promote: bool = True, progress: bool = True
) -> UpdateOutcome:
    """:func:`run_update`'s work, for a caller that holds the home's update lock already."""
    started, wall = time.perf_counter(), time.time()
    settings = home.settings.update
    if strategy is not None:
        settings = replace_strategy(settings, strategy)
    registry = home.registry
    live = registry.live()
    if live is None:
        raise LookupError(f"no live model in {home.path}: run `streamrec train` first")
    info = registry.get(live)
    settings = with_tuned(settings, info.tuned)
    with home.open_store() as store:
        start, last = info.trained_through_offset, store.log.last_offset()
        if last - start < settings.min_events:
            reason = f"{last - start} new events since {live} (update.min_events is {settings.min_events})"
            return UpdateOutcome(None, False, reason)
        model = SASRec.load(registry.path(live))
        prepared = prepare(store, last, vocabulary=registry.items(live), type_names=model.type_names)
        fresh = sum(int((offsets > start).sum()) for offsets in prepared.offsets)
        if fresh < settings.min_events:  # offsets of forgotten users' events count above, not here
            reason = f"{fresh} new events since {live} (update.min_events is {settings.min_events})"
            return UpdateOutcome(None, False, reason)
        model.item_texts = prepared.texts  # new items are judged as a text-tuned model would grow them
    text = None
    if info.text_model:  # the encoder is dropped once the texts are encoded, before the update
        text = home.text_encoder(info.text_model).encode(prepared.texts, progress=progress)
    verdict = guarded_update(
        model,
        prepared.data,
        prepared.offsets,
        start,
        settings,
        trailing=trailing_live_ndcg(registry.versions()),
        text=text,
        texts=prepared.texts,
        progress=progress,
    )
    record = verdict.record()
    crash_point("after-training")
    reranker = None
    if info.reranker or home.settings.model.rerank == "lm":  # the parent's was asked for: keep one
        parent = registry.path(live)
        text_model = info.reranker.get("text_model") or info.text_model or DEFAULT_TEXT_MODEL
        minutes = home.settings.model.rerank_minutes
        if "rerank_minutes" not in home.settings.model.model_fields_set:  # the fit's budget travels
            minutes = info.reranker.get("minutes", minutes)
        through = verdict.trained_through
        reranker = fit_reranker(verdict.candidate, prepared, through, text_model, parent, minutes, progress)
    save, categories = saved_with_categories(
        home, verdict.candidate, prepared.items, info.text_model, reranker
    )
    if forgotten_since(home, wall):
        reason = "a user it learned from was forgotten during the update; the next update learns without them"
        return UpdateOutcome(None, False, reason)
    version = registry.add(
        save,
        prepared.items,
        {
            "status": "candidate",
            "strategy": verdict.strategy,
            "parent": live,
            "trained_from_offset": start,
            "trained_through_offset": verdict.trained_through,
            "text_model": info.text_model,
            "metrics": {"ndcg@10": round(verdict.candidate_ndcg, 5)},
            "timings": {
                "update_seconds": round(verdict.seconds, 2),
                "total_seconds": round(time.perf_counter() - started, 2),
            },
            "update": {
                **{k: v for k, v in verdict.summary.items() if k != "seconds"},
                "strategy": verdict.strategy,
                "new_events": verdict.trained_through - start,
                "drift": verdict.drift,
            },
            "guardrail": {
                "candidate_ndcg@10": record["candidate_ndcg@10"],
                "live_ndcg@10": record["live_ndcg@10"],
                "examples": verdict.examples,
                "epsilon": settings.guardrail_epsilon,
                "holdout_offsets": [verdict.trained_through + 1, verdict.last],
            },
            "tuned": verdict.tuned or info.tuned,
            "categories": categories,
            "reranker": {} if reranker is None else reranker.report,
            # A refit (drift, strategy full) is private as its parent's settings say; an
            # incremental update learns its events without DP (training/private.py).
            "privacy": refit_privacy(verdict),
        },
    )
    promoted, reason = verdict.promoted, verdict.reason
    if promoted and promote and registry.live() == live:
        version = registry.promote(version.version)
    elif promoted and promote:
        promoted, reason = False, f"{reason}; not promoted: the live version changed during the update"
        version = registry.set_status(version.version, "rejected", notes=reason)
    elif promoted:
        reason += "; passes the guardrail, left as a candidate (promotion off)"
        version = registry.set_status(version.version, "candidate", notes=reason)
    else:
        version = registry.set_status(version.version, "rejected", notes=f"worse than live: {reason}")
    registry.prune(home.settings.keep_versions)
    return UpdateOutcome(version, promoted and promote, reason)


class GuardedLearner(Recommender):
    """A home's model life in memory: fit like ``streamrec train``, partial_fit like ``streamrec update``.

    ``partial_fit`` runs :func:`guarded_update` on all the events so far (``data``
    holds every user's whole history; events are placed by time), keeps the
    candidate only when the guardrail promotes it, and records every verdict.
    ``text`` holds every item's text embedding the stream will ever know
    (rows = item codes), so new items are scored from their text before they are
    learned, as the server scores them; ``texts`` are their words, for a text-tuned model.
    """

    def __init__(
        self,
        config: SASRecConfig,
        settings: UpdateSettings,
        text: np.ndarray | None = None,
        texts: Sequence[str] | None = None,
    ) -> None:
        self.config, self.settings, self.text, self.texts = config, settings, text, texts
        self.live: SASRec | None = None
        self.trained_through = 0  # events (in time order) the live model learned
        self.tuned: dict[str, Any] = {}  # the update settings the live model's last fit chose
        self.fit_record: dict[str, Any] = {}  # what the first fit did: trained through, tuning
        self.verdicts: list[dict[str, Any]] = []
        self._trailing: list[float] = []

    def fit(self, data: TrainingData, *, progress: bool = False) -> GuardedLearner:
        config = replace(self.config, epochs=self.settings.full_epochs, seed=self.settings.seed)
        fitted = fit_and_tune(
            data, time_positions(data), config, self.settings, self.text, texts=self.texts, progress=progress
        )
        self.live, self.trained_through, self.tuned = fitted.model, fitted.trained_through, fitted.tuned
        self.n_items = data.n_items
        self.fit_record = {"trained_through": fitted.trained_through, **fitted.tuning}
        return self

    def partial_fit(self, data: TrainingData, *, progress: bool = False) -> GuardedLearner:
        if self.live is None:
            return self.fit(data, progress=progress)
        started = time.perf_counter()
        verdict = guarded_update(
            self.live,
            data,
            time_positions(data),
            self.trained_through,
            with_tuned(self.settings, self.tuned),
            trailing=self._trailing,
            text=self.text,
            texts=self.texts,
            progress=progress,
        )
        self._trailing.append(verdict.live_ndcg)
        if verdict.promoted:
            self.live, self.trained_through = verdict.candidate, verdict.trained_through
            self.tuned = verdict.tuned or self.tuned
        self.verdicts.append({**verdict.record(), "seconds": round(time.perf_counter() - started, 3)})
        return self

    def add_items(self, n_items: int) -> None:
        if self.live is not None and n_items > self.live.n_items:
            self.live = self.live.grow(n_items, self.text)
        self.n_items = max(self.n_items, n_items)

    def score(self, histories: list[np.ndarray]) -> np.ndarray:
        if self.live is None:
            raise RuntimeError("GuardedLearner is not fitted")
        return self.live.score(histories)


def time_positions(data: TrainingData) -> list[np.ndarray]:
    """Each event's place in time order, from 1 (ties: by user, then by place in the user's sequence).

    Events appended later in time keep the earlier events' places, as log offsets do.
    """
    if data.timestamps is None:
        raise ValueError("placing events in time needs their timestamps")
    lengths = [len(s) for s in data.sequences]
    times = np.concatenate(data.timestamps) if lengths else np.zeros(0)
    users = np.repeat(np.arange(len(lengths)), lengths)
    index = np.concatenate([np.arange(n) for n in lengths]) if lengths else np.zeros(0, dtype=np.int64)
    order = np.lexsort((index, users, times))
    places = np.empty(len(order), dtype=np.int64)
    places[order] = np.arange(1, len(order) + 1)
    return np.split(places, np.cumsum(lengths)[:-1]) if lengths else []
