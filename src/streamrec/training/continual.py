"""One incremental update of the live version, judged on fresh data before it can go live.

The steps, each safe to interrupt (nothing is visible until the registry's
atomic add, and the live pointer only moves in an atomic promote):

1. read the log after the live version's offset; the newest events (the
   holdout) stay out of training, so both models can be judged on them;
2. score the live model on the holdout: its test-then-train accuracy, which
   also feeds the drift detector (a large drop below its trailing level
   turns the update into a full refit);
3. train a candidate with the strategy, from the live model grown to every
   item now known (new items start from their text);
4. score the candidate on the same holdout: promote it unless it is worse
   than the live model by more than ε, else keep it as ``rejected``;
5. prune old versions by the retention policy.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from streamrec.config import Settings
from streamrec.evaluation.offline import evaluate
from streamrec.models.sasrec import SASRec
from streamrec.registry import Registry, VersionInfo
from streamrec.store import Store
from streamrec.training.cost import RefitCost
from streamrec.training.fit import MODELS_DIR, PreparedData, fit_sasrec, prepare, text_encoder_for
from streamrec.training.tuning import TuningResult, tune_update
from streamrec.training.update import UpdateConfig, update

LOCK_FILE = ".update.lock"


class UpdateInProgress(RuntimeError):
    """Another process is updating this home right now."""


@dataclass
class UpdateOutcome:
    """What an update did: ``version`` is None when there was nothing to learn."""

    version: VersionInfo | None
    promoted: bool
    reason: str


@contextmanager
def update_lock(home: Path) -> Iterator[None]:
    """One update per home at a time; the lock dies with its process, so a crash never wedges it."""
    path = Path(home) / MODELS_DIR / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UpdateInProgress(f"an update of {home} is already running") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def update_config_from(settings: Settings, strategy: str | None = None) -> UpdateConfig:
    return UpdateConfig(
        strategy=strategy or settings.update_strategy,
        epochs=settings.update_epochs,
        lr=settings.update_lr,
        lr_schedule=settings.update_lr_schedule,
        batch_size=settings.update_batch_size,
        new_item_lr_scale=settings.new_item_lr_scale,
        replay_share=settings.replay_share,
        replay_users=settings.replay_users,
        distill_weight=settings.distill_weight,
        full_epochs=settings.full_refit_epochs,
    )


# The streamrec.toml key of each UpdateConfig field tune_update chooses (update_config_from, reversed).
TUNED_SETTING_KEYS = {
    "epochs": "update_epochs",
    "lr": "update_lr",
    "batch_size": "update_batch_size",
    "new_item_lr_scale": "new_item_lr_scale",
    "replay_share": "replay_share",
}


def tune_update_settings(
    store: Store, home: Path, settings: Settings, *, budget: float | None = None
) -> TuningResult:
    """Tune the update's step settings on the whole log, with the live version's model settings.

    The slices the candidates learn are as large as the worker's updates
    (``update_every_events``) where the log is long enough. ``budget``: the share
    of a refit's time an update may take, which sets its epochs.
    """
    registry = Registry(Path(home) / MODELS_DIR)
    live = _live_version(registry, home)
    info = registry.get(live)
    model_config = SASRec.load_config(registry.path(live))
    prepared = prepare(store)
    encoder = text_encoder_for(Path(home), info.text_model) if info.text_model else None
    text = encoder.encode(prepared.texts, progress=False) if encoder else None
    return tune_update(
        prepared.data,
        model_config,
        update_config_from(settings),
        text_embeddings=text,
        update_events=settings.update_every_events,
        budget=budget,
    )


def _live_version(registry: Registry, home: Path) -> str:
    live = registry.live()
    if live is None:
        raise LookupError(f"no live model in {home}: run `streamrec train` first")
    return live


def holdout_examples(prepared: PreparedData) -> tuple[list[np.ndarray], np.ndarray]:
    """Every event ``learn`` marks, as (the user's history before it, its item)."""
    histories, targets = [], []
    data = prepared.data
    assert data.learn is not None
    for sequence, marked in zip(data.sequences, data.learn, strict=True):
        for index in np.flatnonzero(marked):
            if index > 0:
                histories.append(sequence[:index])
                targets.append(sequence[index])
    return histories, np.array(targets, dtype=np.int64)


def trailing_live_ndcg(versions: list[VersionInfo], window: int) -> list[float]:
    """The live models' test-then-train NDCG@10 recorded by the last ``window`` updates."""
    scores = [v.guardrail["live_ndcg@10"] for v in versions if "live_ndcg@10" in v.guardrail]
    return scores[-window:]


def run_update(
    store: Store,
    home: Path,
    settings: Settings,
    *,
    strategy: str | None = None,
    promote: bool = True,
    progress: bool = True,
) -> UpdateOutcome:
    """Learn the events after the live version's offset as a candidate, and promote it if it holds up."""
    started = time.perf_counter()
    registry = Registry(Path(home) / MODELS_DIR)
    with update_lock(Path(home)):
        live = _live_version(registry, home)
        info = registry.get(live)
        start, last = info.trained_through_offset, store.log.last_offset()
        fresh = last - start
        if fresh < settings.update_min_events:
            reason = f"{fresh} new events since {live} (update_min_events is {settings.update_min_events})"
            return UpdateOutcome(None, False, reason)
        holdout = min(max(1, int(fresh * settings.holdout_fraction)), settings.holdout_max_events)
        cut = last - holdout
        model = SASRec.load(registry.path(live))
        judged = prepare(
            store, last, vocabulary=registry.items(live), type_names=model.type_names, learn_after=cut
        )
        histories, targets = holdout_examples(judged)
        encoder = text_encoder_for(Path(home), info.text_model) if info.text_model else None
        text = encoder.encode(judged.texts, progress=progress) if encoder else None
        live_ndcg = _ndcg(model.grow(len(judged.items), text), histories, targets)

        config = update_config_from(settings, strategy)
        versions = registry.versions()  # read once: the drift level and the refit pace both come from it
        trailing = trailing_live_ndcg(versions, settings.drift_window)
        level = float(np.mean(trailing)) if trailing else None
        drift = (
            level is not None
            and len(targets) >= settings.drift_min_examples
            and live_ndcg < (1 - settings.drift_threshold) * level
        )
        if drift and config.strategy != "full":
            config = replace(config, strategy="full")

        train = judged.through(cut, learn_after=start)
        pace = _latest_pace(versions)  # carried into every version, so pruning never loses it
        if settings.update_budget is not None and config.strategy != "full":
            if pace is None:
                raise ValueError(
                    "update_budget: no fit in this registry was timed (models trained before streamrec"
                    " recorded its pace); run `streamrec train` once, or unset update_budget"
                )
            config = replace(config, budget=settings.update_budget)
        update_started = time.perf_counter()
        timings = {} if pace is None else pace.timings()
        if config.strategy == "full":
            fresh_config = replace(model.config, epochs=config.refit_epochs(model.config))
            refit_data = replace(train, data=replace(train.data, learn=None))
            candidate, _ = fit_sasrec(refit_data, fresh_config, encoder, progress=progress)
            timings |= RefitCost.timed(candidate, refit_data.data).timings()
            summary = {"strategy": "full", "trainable_fraction": 1.0, "changed_fraction": 1.0}
        else:
            result = update(model, train.data, config, text_embeddings=text, cost=pace, progress=progress)
            candidate, summary = result.model, result.summary()
        update_seconds = time.perf_counter() - update_started
        candidate_ndcg = _ndcg(candidate, histories, targets)

        promoted = candidate_ndcg >= live_ndcg - settings.guardrail_epsilon
        verdict = (
            f"candidate NDCG@10 {candidate_ndcg:.4f} vs live {live_ndcg:.4f} on {len(targets)} held-out"
            f" events (ε {settings.guardrail_epsilon})"
        )
        if drift:
            verdict += (
                f"; drift: live {live_ndcg:.4f} < (1 - {settings.drift_threshold}) × trailing {level:.4f}"
            )
        version = registry.add(
            candidate.save,
            judged.items,
            {
                "status": "candidate",
                "strategy": config.strategy,
                "parent": live,
                "trained_from_offset": start,
                "trained_through_offset": cut,
                "text_model": info.text_model,
                "metrics": {"ndcg@10": round(candidate_ndcg, 5)},
                "timings": {
                    "update_seconds": round(update_seconds, 2),
                    "total_seconds": round(time.perf_counter() - started, 2),
                    **timings,
                },
                "update": {**summary, "new_events": cut - start, "drift": drift},
                "guardrail": {
                    "candidate_ndcg@10": round(candidate_ndcg, 5),
                    "live_ndcg@10": round(live_ndcg, 5),
                    "examples": len(targets),
                    "epsilon": settings.guardrail_epsilon,
                    "holdout_offsets": [cut + 1, last],
                },
            },
        )
        if promoted and promote and registry.live() == live:
            version = registry.promote(version.version)
        elif promoted and promote:
            promoted, verdict = False, f"{verdict}; not promoted: the live version changed during the update"
            version = registry.set_status(version.version, "rejected", notes=verdict)
        elif promoted:
            verdict += "; passes the guardrail, left as a candidate (promotion off)"
            version = registry.set_status(version.version, "candidate", notes=verdict)
        else:
            version = registry.set_status(version.version, "rejected", notes=f"worse than live: {verdict}")
        registry.prune(settings.keep_versions)
        return UpdateOutcome(version, promoted and promote, verdict)


def _latest_pace(versions: list[VersionInfo]) -> RefitCost | None:
    """The newest version's record of a refit's pace (a machine's pace, whichever lineage)."""
    timed = [cost for v in versions if (cost := RefitCost.from_timings(v.timings)) is not None]
    return timed[-1] if timed else None


def _ndcg(model: SASRec, histories: list[np.ndarray], targets: np.ndarray) -> float:
    if not len(targets):
        return 0.0
    return float(evaluate(model, histories, targets, ks=(10,), unfiltered=False)["ndcg@10"])
