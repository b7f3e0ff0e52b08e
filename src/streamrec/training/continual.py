"""The guarded update: learn the newest events, judge the candidate on fresh data, promote only if it holds.

One engine, used alike by ``streamrec update``, the worker, ``POST /admin/update``
(through :func:`run_update`) and the streaming benchmark (through
:class:`GuardedLearner`), so what is measured is what is shipped:

1. the newest events (the holdout) stay out of training, so both models can
   be judged on them;
2. the live model is scored on the holdout: its test-then-train accuracy, which
   also feeds the drift detector (a large drop below its trailing level turns
   the update into a refit);
3. a candidate learns the events after the live model's, up to the holdout,
   with the configured strategy (or refits);
4. the candidate is scored on the same holdout and promoted unless it is worse
   than the live model by more than ε.

In a home every step is safe to interrupt: nothing is visible until the
registry's atomic add, and the live pointer only moves in an atomic promote.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from streamrec.config import UpdateSettings
from streamrec.evaluation.offline import evaluate
from streamrec.home import Home
from streamrec.models.base import Recommender, TrainingData
from streamrec.models.sasrec import SASRec, SASRecConfig
from streamrec.registry import VersionInfo
from streamrec.training.fit import prepare, refit
from streamrec.training.strategies import update


@dataclass
class Verdict:
    """What one guarded update did with its candidate."""

    candidate: SASRec
    strategy: str  # the one that ran: the configured one, or "full" on drift
    promoted: bool
    reason: str
    drift: bool
    live_ndcg: float
    candidate_ndcg: float
    examples: int  # held-out events both were judged on
    trained_from: int  # the candidate learned events after this position …
    trained_through: int  # … up to this one; the holdout follows
    last: int  # the newest position the update saw
    seconds: float  # learning only (update or refit)
    summary: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The verdict as the registry and the benchmark's JSON keep it."""
        return {
            "strategy": self.strategy,
            "promoted": self.promoted,
            "drift": self.drift,
            "candidate_ndcg@10": round(self.candidate_ndcg, 5),
            "live_ndcg@10": round(self.live_ndcg, 5),
            "examples": self.examples,
            "learn_seconds": round(self.seconds, 3),
            **{k: v for k, v in self.summary.items() if k not in ("strategy", "seconds")},
        }


def guarded_update(
    live: SASRec,
    data: TrainingData,
    positions: list[np.ndarray],
    trained_through: int,
    settings: UpdateSettings,
    *,
    trailing: list[float],
    text: np.ndarray | None = None,
    progress: bool = False,
) -> Verdict:
    """Learn ``data``'s events after position ``trained_through`` (all but the holdout) and judge them.

    ``positions[u]`` gives each event's place in the log (its offset): the newest
    positions are the holdout. ``trailing``: the live models' holdout NDCG@10 of
    the last updates, the level drift is measured against. ``text`` covers every
    item of ``data``. ``live`` is left untouched.
    """
    every = np.concatenate(positions) if positions else np.zeros(0, dtype=np.int64)
    fresh = int((every > trained_through).sum())
    if fresh < 2:
        raise ValueError(f"nothing to learn: {fresh} events after position {trained_through}")
    holdout = min(max(1, int(fresh * settings.holdout_fraction)), settings.holdout_max_events)
    ranked = np.sort(every)
    cut, last = int(ranked[-holdout - 1]), int(ranked[-1])
    histories, targets = holdout_examples(data, [p > cut for p in positions])
    judged_live = live.grow(data.n_items, text) if data.n_items > live.n_items else live
    live_ndcg = ndcg_at_10(judged_live, histories, targets)

    level = float(np.mean(trailing[-settings.drift_window :])) if trailing else None
    drift = (
        level is not None
        and len(targets) >= settings.drift_min_examples
        and live_ndcg < (1 - settings.drift_threshold) * level
    )
    if drift:
        settings = replace_strategy(settings, "full")

    train = data.masked([p <= cut for p in positions])
    train = replace(train, learn=[p[p <= cut] > trained_through for p in positions])
    started = time.perf_counter()
    if settings.strategy == "full":
        config = replace(live.config, epochs=settings.full_epochs, seed=settings.seed)
        candidate, _ = refit(
            replace(train, learn=None), config, _text(config, text, data.n_items), progress=progress
        )
        summary: dict[str, Any] = {"epochs": candidate.fit_epochs}
    else:
        result = update(live, train, settings, text_embeddings=text, progress=progress)
        candidate, summary = result.model, result.summary()
    seconds = time.perf_counter() - started
    candidate_ndcg = ndcg_at_10(candidate, histories, targets)

    promoted = candidate_ndcg >= live_ndcg - settings.guardrail_epsilon
    reason = (
        f"candidate NDCG@10 {candidate_ndcg:.4f} vs live {live_ndcg:.4f} on {len(targets)} held-out"
        f" events (ε {settings.guardrail_epsilon})"
    )
    if drift:
        reason += f"; drift: live {live_ndcg:.4f} < (1 - {settings.drift_threshold}) × trailing {level:.4f}"
    return Verdict(
        candidate,
        settings.strategy,
        promoted,
        reason,
        drift,
        live_ndcg,
        candidate_ndcg,
        len(targets),
        trained_through,
        cut,
        last,
        seconds,
        summary,
    )


def replace_strategy(settings: UpdateSettings, strategy: str) -> UpdateSettings:
    return settings.model_copy(update={"strategy": strategy})


def holdout_examples(data: TrainingData, held: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """Every held-out event as (the user's history before it, its item)."""
    histories, targets = [], []
    for sequence, marked in zip(data.sequences, held, strict=True):
        for index in np.flatnonzero(marked):
            if index > 0:
                histories.append(sequence[:index])
                targets.append(sequence[index])
    return histories, np.array(targets, dtype=np.int64)


def ndcg_at_10(model: Recommender, histories: list[np.ndarray], targets: np.ndarray) -> float:
    if not len(targets):
        return 0.0
    return float(evaluate(model, histories, targets, ks=(10,), unfiltered=False)["ndcg@10"])


def _text(config: SASRecConfig, text: np.ndarray | None, n_items: int) -> np.ndarray | None:
    return None if config.item_tower == "id" or text is None else text[:n_items]


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
    started = time.perf_counter()
    settings = home.settings.update
    if strategy is not None:
        settings = replace_strategy(settings, strategy)
    registry = home.registry
    with home.update_lock():
        live = registry.live()
        if live is None:
            raise LookupError(f"no live model in {home.path}: run `streamrec train` first")
        info = registry.get(live)
        with home.open_store() as store:
            start, last = info.trained_through_offset, store.log.last_offset()
            if last - start < settings.min_events:
                reason = (
                    f"{last - start} new events since {live} (update.min_events is {settings.min_events})"
                )
                return UpdateOutcome(None, False, reason)
            model = SASRec.load(registry.path(live))
            prepared = prepare(store, last, vocabulary=registry.items(live), type_names=model.type_names)
        encoder = home.text_encoder(info.text_model) if info.text_model else None
        text = encoder.encode(prepared.texts, progress=progress) if encoder else None
        verdict = guarded_update(
            model,
            prepared.data,
            prepared.offsets,
            start,
            settings,
            trailing=trailing_live_ndcg(registry.versions()),
            text=text,
            progress=progress,
        )
        record = verdict.record()
        version = registry.add(
            verdict.candidate.save,
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
    learned, as the server scores them.
    """

    def __init__(
        self, config: SASRecConfig, settings: UpdateSettings, text: np.ndarray | None = None
    ) -> None:
        self.config, self.settings, self.text = config, settings, text
        self.live: SASRec | None = None
        self.trained_through = 0  # events (in time order) the live model learned
        self.verdicts: list[dict[str, Any]] = []
        self._trailing: list[float] = []

    def fit(self, data: TrainingData, *, progress: bool = False) -> GuardedLearner:
        config = replace(self.config, epochs=self.settings.full_epochs, seed=self.settings.seed)
        self.live, _ = refit(
            replace(data, learn=None), config, _text(config, self.text, data.n_items), progress=progress
        )
        self.n_items = data.n_items
        self.trained_through = sum(len(s) for s in data.sequences)
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
            self.settings,
            trailing=self._trailing,
            text=self.text,
            progress=progress,
        )
        self._trailing.append(verdict.live_ndcg)
        if verdict.promoted:
            self.live, self.trained_through = verdict.candidate, verdict.trained_through
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
