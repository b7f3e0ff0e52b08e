"""The background worker: updates the live model as events arrive.

It polls the log and runs :func:`~streamrec.training.continual.run_update`
after ``update.every_events`` new events or ``update.every_seconds`` since the
last attempt, whichever comes first (the latter only once at least
``update.min_events`` have arrived). Drift is checked inside every update.
After a rejected candidate it waits for a fresh trigger instead of retrying
the same events at once. Every :data:`GUARD_SECONDS` it also runs the A/B
test's guard (:func:`streamrec.experiments.guard`): the worker runs once per
deployment, so the guard does too. Once a forgotten user's oldest pending request is
``privacy.unlearn_after_seconds`` old, it unlearns them (:func:`streamrec.privacy.unlearn`);
with ``privacy.retention_days`` set, it purges expired events every ``privacy.purge_every_seconds``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from streamrec import experiments
from streamrec.config import UpdateSettings
from streamrec.home import Home, UpdateInProgress
from streamrec.privacy import pending, purge_expired, unlearn
from streamrec.training.continual import UpdateOutcome, run_update

log = logging.getLogger("streamrec.worker")
GUARD_SECONDS = 30.0  # how often a running experiment is judged (reading its impressions and events)


@dataclass
class Trigger:
    """When the next update is due, given what the last attempt saw."""

    every_events: int
    every_seconds: float
    min_events: int
    last_attempt_offset: int = 0
    last_attempt_time: float = 0.0

    @classmethod
    def from_settings(cls, settings: UpdateSettings) -> Trigger:
        return cls(settings.every_events, settings.every_seconds, settings.min_events)

    def due(self, live_offset: int, last_offset: int, now: float) -> str | None:
        """Why an update is due now, or None."""
        since = max(live_offset, self.last_attempt_offset)
        new = last_offset - since
        if new >= self.every_events:
            return f"{new} new events (update.every_events {self.every_events})"
        waited = now - max(self.last_attempt_time, 0.0)
        if new >= self.min_events and waited >= self.every_seconds:
            return f"{new} new events and {waited:.0f} s since the last update"
        return None

    def attempted(self, last_offset: int, now: float) -> None:
        self.last_attempt_offset, self.last_attempt_time = last_offset, now


def run_worker(
    home: Home,
    *,
    stop: threading.Event | None = None,
    once: bool = False,
    strategy: str | None = None,
) -> list[UpdateOutcome]:
    """Poll and update until ``stop`` is set (or after the first update with ``once``)."""
    stop = stop or threading.Event()
    registry = home.registry
    trigger = Trigger.from_settings(home.settings.update)
    trigger.last_attempt_time = time.time()
    live = registry.live()
    if live is not None:
        trigger.last_attempt_time = registry.get(live).created_at
    outcomes: list[UpdateOutcome] = []
    guarded = purged = 0.0
    with home.open_store() as store:
        while not stop.is_set():
            if time.time() - guarded >= GUARD_SECONDS:
                guarded = time.time()
                stopped = experiments.guard(registry, store, home.settings.online)
                if stopped is not None:
                    log.warning(
                        "experiment %s stopped: arm b (%s) is significantly worse", stopped.id, stopped.b
                    )
            if time.time() - purged >= home.settings.privacy.purge_every_seconds:
                purged = time.time()
                expired = purge_expired(home)
                if expired is not None:
                    log.info(
                        "retention: purged %d events, %d impressions", expired.events, expired.impressions
                    )
            _, since = pending(store, registry)
            if since is not None and time.time() - since >= home.settings.privacy.unlearn_after_seconds:
                try:
                    done = unlearn(home)
                except UpdateInProgress as error:
                    log.info("unlearning waits: %s", error)
                except ValueError as error:  # a user was forgotten during the refit: the next poll retries
                    log.warning("unlearning retries: %s", error)
                else:
                    log.warning(
                        "unlearned: %s live (%s), erased %s",
                        done.live or "-",
                        done.how,
                        ", ".join(done.erased),
                    )
            live = registry.live()
            if live is None and once:
                raise LookupError(f"no live model in {home.path}: run `streamrec train` first")
            if live is not None:
                last = store.log.last_offset()
                reason = trigger.due(registry.get(live).trained_through_offset, last, time.time())
                if reason or once:
                    log.info("update: %s", reason or "requested")
                    trigger.attempted(last, time.time())
                    try:
                        outcome = run_update(home, strategy=strategy, progress=False)
                    except UpdateInProgress as error:
                        log.info("%s; waiting", error)
                    else:
                        outcomes.append(outcome)
                        log.info("%s %s", outcome.version.version if outcome.version else "-", outcome.reason)
                    if once:
                        break
            stop.wait(home.settings.worker_poll_seconds)
    return outcomes
