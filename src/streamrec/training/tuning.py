"""Pick an update's step settings on past events, never on the events it will be judged by.

How far an update should move depends on the stream: a stream whose periods
bring many users with long histories wants more and larger steps than a small
one, where the same steps overfit, and a stream whose catalogue turns over
wants new items' rows to learn faster. Rather than guess, :func:`tune_update`
replays the history it is given as a small test-then-train run: it fits a model
on the older part (the first half, unless slices as large as a real update leave
more), then for each candidate setting learns each newer slice and scores the
next one. Differences of a percent are noise at this scale, so the first
candidate (the gentlest) within ``tolerance`` of the best mean NDCG@10 wins.

A setting's effect can be smaller than that noise and still real: on the
drifting synthetic stream new items' rows at 8× beat 1× at every learning rate
and batch size, by less than a percent. So before the tolerance applies, each
setting is compared like for like (candidates that differ only in it), and a
value that wins every such comparison is kept (:func:`choose`). By chance alone
one value would win all of a two-valued setting's n pairs 2 in 2ⁿ times: about
3 % for six pairs, 0.05 % for the twelve of the default grid.

Candidates are compared at equal compute: a smaller batch takes more optimiser
steps per epoch but pads less, and a larger replay share reads more rows, so each
setting gets the epochs that fit in one allowance, priced at the pace of the
tuner's own fit (:class:`RefitCost`). The allowance is ``base.epochs`` with the
grid's first setting or, given a ``budget``, that share of a refit's compute,
which then also ends each of the candidates' updates: a stream whose updates are
cheap next to its refits gets more epochs, and the user states what an update
may cost rather than how many passes it makes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from streamrec.evaluation.prequential import cut_at_quantiles, score_examples
from streamrec.models.base import TrainingData
from streamrec.models.sasrec import SASRec, SASRecConfig
from streamrec.training.cost import RefitCost, Rows
from streamrec.training.update import UpdateConfig, training_data, update

# Gentlest first: of settings that score alike, the earliest wins.
UPDATE_GRID: tuple[dict[str, Any], ...] = tuple(
    {"lr": lr, "batch_size": batch_size, "new_item_lr_scale": scale, "replay_share": share}
    for lr in (1e-3, 2e-3, 4e-3)
    for batch_size in (128, 32)
    for scale in (1.0, 8.0)
    for share in (1 / 3, 1.0)
)


@dataclass
class TuningResult:
    chosen: UpdateConfig
    candidates: list[dict[str, Any]]  # each setting with its mean NDCG@10 on the held-out slices
    seconds: float
    tolerance: float  # the chosen one is the first within this fraction of the best
    budget: float | None = None  # each candidate's update time / a refit's, when it set the epochs
    refit_seconds: float = 0.0  # the refit time the budget was taken of (estimated on the history)
    slice_events: int = 0  # about how many events each slice an update learned held
    decided: dict[str, Any] = field(default_factory=dict)  # settings whose value won like for like

    def summary(self) -> dict[str, Any]:
        settings = {key: getattr(self.chosen, key) for key in self.candidates[0]["settings"]}
        return {
            "chosen": settings,
            "candidates": self.candidates,
            "decided": self.decided,
            "tolerance": self.tolerance,
            "budget": self.budget,
            "refit_seconds": round(self.refit_seconds, 2),
            "slice_events": self.slice_events,
            "seconds": round(self.seconds, 2),
        }


def tune_update(
    history: TrainingData,
    config: SASRecConfig,
    base: UpdateConfig,
    *,
    text_embeddings: np.ndarray | None = None,
    slices: int = 6,
    update_events: int | None = None,
    grid: tuple[dict[str, Any], ...] = UPDATE_GRID,
    tolerance: float = 0.01,
    budget: float | None = None,
) -> TuningResult:
    """Choose among ``grid`` (overrides of ``base``) by a test-then-train run over ``history``.

    ``history`` is cut by time into ``slices`` equal slices; a model is fitted on
    the first half (``base.full_epochs`` epochs, like a refit), and every candidate
    then learns each later slice and is scored on the next, up to the last. With
    ``update_events`` (the new events a real update learns), the later slices hold
    that many events when it is fewer, and the fit reads all before them: how far
    an update should move depends on how much it learns at once. ``text_embeddings``
    are indexed by ``history``'s item codes. The first candidate whose mean NDCG@10
    is within ``tolerance`` (a fraction) of the best is chosen. ``budget``, a share
    of a refit's time, sets every candidate's epochs instead of ``base.epochs``.
    """
    if history.timestamps is None:
        raise ValueError("tuning an update needs event timestamps")
    if slices < 4:
        raise ValueError(f"slices: must be at least 4 (got {slices})")
    if update_events is not None and update_events < 1:
        raise ValueError(f"update_events: must be at least 1 (got {update_events})")
    if not grid:
        raise ValueError("grid: needs at least one candidate setting")
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance: must be in [0, 1) (got {tolerance})")
    if budget is not None and not 0 < budget <= 1:
        raise ValueError(f"budget: must be in (0, 1] (got {budget})")
    started = time.perf_counter()
    # Period 0 is what the tuner fits on; periods 1 .. later are the slices updates learn.
    later = slices - slices // 2
    events = sum(len(s) for s in history.sequences)
    share = 1 / slices if update_events is None else min(update_events / events, 1 / slices)
    split = cut_at_quantiles(
        replace(history, learn=None), [0.0, *(1 - share * k for k in range(later, -1, -1))]
    )
    text = None if text_embeddings is None or config.item_tower == "id" else text_embeddings[split.item_order]
    # The events through each period the tuner fits or updates on, cut once for every candidate.
    through = {s: split.through(s) for s in range(later)}
    fit_config = replace(config, epochs=base.refit_epochs(config), seed=base.seed)
    fitted = SASRec(fit_config, None if text is None else text[: split.n_items[0]])
    fitted.fit(replace(through[0], learn=None), progress=False)
    # A refit after the first slice reads one slice more than this fit did.
    cost = RefitCost.timed(fitted, through[0])
    refit_seconds = cost.seconds(through[1], fit_config, fit_config.epochs)
    allowance = None if budget is None else budget * refit_seconds
    epochs = _equal_compute_epochs(cost, through[1], base, fit_config, grid, allowance)
    rng = np.random.default_rng(base.seed)
    # The first slice is learned, never scored: scored before any update, it would score every
    # candidate alike, and the tolerance is a share of what the updates change.
    examples = {s: split.examples(s, None, rng) for s in range(2, later + 1)}
    candidates = []
    for settings, planned in zip(grid, epochs, strict=True):
        settings = {**settings, "epochs": planned}
        candidate = replace(base, **settings, budget=budget)
        model, ndcg = fitted, []
        for s in range(1, later):
            model = update(model, through[s], candidate, text_embeddings=text, cost=cost).model
            if split.n_items[s + 1] > model.n_items:
                model = model.grow(int(split.n_items[s + 1]), text)
            ndcg.append(score_examples(model, examples[s + 1])["ndcg@10"])
        candidates.append({"settings": settings, "ndcg@10_mean": round(float(np.mean(ndcg)), 5)})
    decided, first = choose(candidates, tolerance)
    chosen = replace(base, **first["settings"])
    seconds = time.perf_counter() - started
    return TuningResult(
        chosen, candidates, seconds, tolerance, budget, refit_seconds, round(share * events), decided
    )


def choose(candidates: list[dict[str, Any]], tolerance: float) -> tuple[dict[str, Any], dict[str, Any]]:
    """The settings decided like for like, and the candidate chosen: the first within ``tolerance``.

    A setting is decided when the same one of its values scores best in every
    group of candidates that differ only in it, over at least two groups (one
    group is a single comparison, which the tolerance already weighs). The
    tolerance then picks among the candidates with every decided value; should a
    grid that is not a full product have none, among all of them.
    """
    keys = [key for key in candidates[0]["settings"] if key != "epochs"]  # epochs follow the rest
    decided = {}
    for key in keys:
        groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for candidate in candidates:
            rest = tuple(candidate["settings"][other] for other in keys if other != key)
            groups.setdefault(rest, []).append(candidate)
        compared = [group for group in groups.values() if len(group) > 1]
        winners = {max(group, key=lambda c: c["ndcg@10_mean"])["settings"][key] for group in compared}
        if len(compared) > 1 and len(winners) == 1:
            decided[key] = winners.pop()
    kept = [c for c in candidates if all(c["settings"][key] == value for key, value in decided.items())]
    kept = kept or candidates
    best = max(c["ndcg@10_mean"] for c in kept)
    return decided, next(c for c in kept if c["ndcg@10_mean"] >= (1 - tolerance) * best)


def _equal_compute_epochs(
    cost: RefitCost,
    data: TrainingData,
    base: UpdateConfig,
    model: SASRecConfig,
    grid: tuple[dict[str, Any], ...],
    allowance: float | None = None,
) -> list[int]:
    """The epochs each setting in ``grid`` plans so that an update of ``data`` takes ``allowance`` seconds.

    Priced at ``cost``'s pace, so no candidate is timed: a smaller batch pays the
    fixed part of a step more often, a larger replay share reads more rows. Without
    an allowance, the compute of ``base.epochs`` with the grid's first setting,
    rounded down; with one, rounded up, and the budget ends the last epoch where it
    runs out.
    """
    per_epoch = []
    for settings in grid:
        candidate = replace(base, **settings)
        rows = Rows.of(training_data(data, candidate), model.max_len)
        pace = cost.for_strategy(candidate.strategy)
        per_epoch.append(max(pace.epoch_seconds(rows, candidate.batch_size or model.batch_size), 1e-12))
    if allowance is None:  # rounded down (the 1e-9 keeps base.epochs whole with the first setting)
        allowance = base.epochs * per_epoch[0]
        return [max(1, math.floor(allowance / seconds + 1e-9)) for seconds in per_epoch]
    return [max(1, math.ceil(allowance / seconds - 1e-9)) for seconds in per_epoch]
