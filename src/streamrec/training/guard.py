"""The guarded update, and the fit that tunes it: one engine for every caller.

Used alike by ``streamrec train`` and ``streamrec update``, the worker,
``POST /admin/update`` (through :mod:`streamrec.training.continual`) and the
streaming benchmark, so what is measured is what is shipped. An update:

1. holds the newest events out of training (the holdout), so both models can
   be judged on them;
2. scores the live model on the holdout: its test-then-train accuracy, which
   also feeds the drift detector (a large drop below its trailing level turns
   the update into a refit);
3. has a candidate learn the events after the live model's, up to the holdout,
   with the configured strategy (or refit);
4. scores the candidate on the same holdout and promotes it unless it is worse
   than the live model by more than ε.

A fit from scratch (:func:`fit_and_tune`: the first train, a drift refit) also
picks the settings the updates after it run with. How far an update should move
depends on the stream: a home whose users bring long histories wants more,
smaller steps than one with a few events a user. No default suits every stream
and users do not run a tuner by hand, so the fit does it as part of the job: it
fits on all but the newest ``tune_share`` of the events, runs the real guarded
update on those from that model once per candidate of :data:`TUNING_GRID`
(each within the update's counted budget), and keeps the best candidate's model
and settings. The result is exactly what an update with the chosen settings
gives, trained through the events before that update's holdout; the next update
learns the rest. Settings the user set (``streamrec.toml``, the environment,
the command line) are never tuned over (:func:`with_tuned`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from streamrec.config import UpdateSettings
from streamrec.evaluation.offline import evaluate
from streamrec.models.base import Recommender, TrainingData
from streamrec.models.sasrec import SASRec, SASRecConfig
from streamrec.training.fit import refit
from streamrec.training.strategies import update

# The defaults first: of candidates that score alike, the earliest wins.
TUNING_GRID: tuple[dict[str, Any], ...] = (
    {"batch_size": None, "lr": 2e-3},
    {"batch_size": 32, "lr": 2e-3},
    {"batch_size": None, "lr": 4e-3},
    {"batch_size": 32, "lr": 4e-3},
)


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
    tuned: dict[str, Any] = field(default_factory=dict)  # a refit's chosen update settings

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
    texts: Sequence[str] | None = None,
    progress: bool = False,
) -> Verdict:
    """Learn ``data``'s events after position ``trained_through`` (all but the holdout) and judge them.

    ``positions[u]`` gives each event's place in the log (its offset): the newest
    positions are the holdout. ``trailing``: the live models' holdout NDCG@10 of
    the last updates, the level drift is measured against. ``text`` (and ``texts``,
    the items' own words, for a text-tuned model) covers every item of ``data``. ``live`` is left untouched.
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

    train = data.masked([p <= cut for p in positions])
    started = time.perf_counter()
    tuned: dict[str, Any] = {}
    if drift or settings.strategy == "full":
        config = replace(live.config, epochs=settings.full_epochs, seed=settings.seed)
        kept = [p[p <= cut] for p in positions]
        fitted = fit_and_tune(train, kept, config, settings, text, texts=texts, progress=progress)
        candidate, cut, tuned = fitted.model, fitted.trained_through, fitted.tuned
        summary: dict[str, Any] = {"epochs": candidate.fit_epochs, "tuning": fitted.tuning}
        settings = replace_strategy(settings, "full")
    else:
        train = replace(train, learn=[p[p <= cut] > trained_through for p in positions])
        result = update(live, train, settings, text_embeddings=text, item_texts=texts, progress=progress)
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
        tuned,
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
class Fitted:
    """A model fitted from scratch and, when tuning ran, the update settings it chose."""

    model: SASRec
    trained_through: int  # the newest position the model learned
    # A plain refit: its scores on each user's last item; tuned: the chosen update's on its holdout.
    metrics: dict[str, float] = field(default_factory=dict)
    tuned: dict[str, Any] = field(default_factory=dict)  # the chosen settings; empty if none were tuned
    tuning: dict[str, Any] = field(default_factory=dict)  # every candidate's score, or why none ran


def with_tuned(settings: UpdateSettings, tuned: dict[str, Any]) -> UpdateSettings:
    """``settings`` with the tuned values, except for the fields the user set explicitly.

    The tuned values do not count as set explicitly, so a later refit tunes them again.
    """
    explicit = settings.model_fields_set
    chosen = {key: value for key, value in tuned.items() if key not in explicit}
    values = {**settings.model_dump(), **chosen}
    return UpdateSettings.model_construct(_fields_set=set(explicit), **values)


def fit_and_tune(
    data: TrainingData,
    positions: list[np.ndarray],
    config: SASRecConfig,
    settings: UpdateSettings,
    text: np.ndarray | None,
    *,
    texts: Sequence[str] | None = None,
    progress: bool = False,
) -> Fitted:
    """Fit on every event of ``data`` (placed in the log by ``positions``) and tune the updates to come.

    A plain refit when tuning is off, the configured strategy is ``full`` (no
    update will use the settings), the user set every tuned field, or the newest
    events are too few to judge the candidates on.
    """
    data = replace(data, learn=None)
    every = np.sort(np.concatenate(positions)) if positions else np.zeros(0, dtype=np.int64)
    fresh = int(len(every) * settings.tune_share)
    holdout = min(max(1, int(fresh * settings.holdout_fraction)), settings.holdout_max_events)
    free = {key for candidate in TUNING_GRID for key in candidate} - settings.model_fields_set
    skipped = (
        "update.tune is off"
        if not settings.tune
        else "a differentially private fit makes no choice on held-out events"
        if config.dp_epsilon is not None
        else "the update strategy is full"
        if settings.strategy == "full"
        else "every tuned setting is set explicitly"
        if not free
        else f"{holdout} events to judge candidates on, fewer than update.tune_min_examples"
        if holdout < settings.tune_min_examples
        else ""
    )
    if skipped:
        model, metrics = refit(
            data, config, _text(config, text, data.n_items), texts=texts, progress=progress
        )
        return Fitted(model, int(every[-1]) if len(every) else 0, metrics, tuning={"skipped": skipped})

    started = time.perf_counter()
    cut = int(every[-fresh - 1])
    older = data.masked([p <= cut for p in positions])
    base, _ = refit(older, config, _text(config, text, data.n_items), texts=texts, progress=progress)
    grid = [{k: v for k, v in candidate.items() if k in free} for candidate in TUNING_GRID]
    grid = [candidate for i, candidate in enumerate(grid) if candidate not in grid[:i]]
    verdicts = [
        guarded_update(
            base,
            data,
            positions,
            cut,
            with_tuned(settings, candidate),
            trailing=[],
            text=text,
            texts=texts,
            progress=progress,
        )
        for candidate in grid
    ]
    scores = [verdict.candidate_ndcg for verdict in verdicts]
    best = int(np.argmax(scores))  # the first of equals
    verdict, chosen = verdicts[best], grid[best]
    candidates = [
        {**candidate, "ndcg@10": round(v.candidate_ndcg, 5), "steps": v.summary["steps"]}
        for candidate, v in zip(grid, verdicts, strict=True)
    ]
    tuning = {
        "chosen": chosen,
        "candidates": candidates,
        "examples": verdict.examples,
        "fit_through": cut,
        "seconds": round(time.perf_counter() - started, 2),
    }
    metrics = {"ndcg@10": round(verdict.candidate_ndcg, 5)}
    return Fitted(verdict.candidate, verdict.trained_through, metrics, chosen, tuning)
