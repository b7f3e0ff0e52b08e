"""Online metrics: what was shown (impressions) against what users did next (events).

An event that carries a shown answer's ``request_id`` and names one of its items is
*attributed* to it. Per group of impressions (model version, experiment arm):

* ``ctr``: the share of impressions with an attributed event of a click type;
* ``conversion_rate``: the same for conversion types (a purchase, say);
* ``hit_rate``: the share of impressions whose user's next event (attributed or not,
  within ``window`` seconds) is one of the items shown: hit@k of the shown lists,
  which needs no client to send request ids back.

Impressions of one user are not independent, so each rate comes with a 95 % interval
from the per-user totals (a ratio of sums; its variance by the delta method), the
interval an A/B test between arms needs too (:mod:`streamrec.experiments`).
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from streamrec.store import Impression, Store
from streamrec.store.base import LoggedEvent

Z95 = 1.959963984540054
DEFAULT_WINDOW = 3600.0  # seconds after an answer during which what the user does counts for it


@dataclass(frozen=True)
class Ratio:
    """A rate over users: ``sum(numerators) / sum(denominators)`` with its delta-method standard error."""

    numerator: float
    denominator: float
    rate: float
    stderr: float

    @classmethod
    def over_users(cls, numerators: Sequence[float], denominators: Sequence[float]) -> Ratio:
        x, n = np.asarray(numerators, dtype=float), np.asarray(denominators, dtype=float)
        total = float(n.sum())
        if total == 0:
            return cls(0.0, 0.0, 0.0, math.inf)
        rate = float(x.sum()) / total
        users = len(n)
        if users < 2:
            return cls(float(x.sum()), total, rate, math.inf)
        # Var(sum x / sum n) ≈ sum((x_u - rate * n_u)^2) / (sum n)^2 · users / (users - 1)
        residual = x - rate * n
        variance = float((residual**2).sum()) / total**2 * users / (users - 1)
        return cls(float(x.sum()), total, rate, math.sqrt(variance))

    def interval(self, z: float = Z95) -> tuple[float, float]:
        if not math.isfinite(self.stderr):
            return (0.0, 1.0)
        return (max(0.0, self.rate - z * self.stderr), min(1.0, self.rate + z * self.stderr))

    def as_dict(self) -> dict[str, object]:
        low, high = self.interval()
        return {"rate": round(self.rate, 6), "ci95": [round(low, 6), round(high, 6)]}


@dataclass
class UserOutcomes:
    """One user's impressions in a group and how many of them led to a click, a conversion, a hit."""

    impressions: int = 0
    clicks: int = 0
    conversions: int = 0
    hits: int = 0


@dataclass
class GroupOutcomes:
    """Per-user outcomes of one group of impressions (a version, or an experiment's arm)."""

    users: dict[str, UserOutcomes] = field(default_factory=dict)

    def ratio(self, outcome: str) -> Ratio:
        rows = list(self.users.values())
        return Ratio.over_users([getattr(r, outcome) for r in rows], [r.impressions for r in rows])

    @property
    def impressions(self) -> int:
        return sum(r.impressions for r in self.users.values())

    def summary(self) -> dict[str, object]:
        totals = {
            name: sum(getattr(r, name) for r in self.users.values()) for name in ("clicks", "conversions")
        }
        return {
            "impressions": self.impressions,
            "users": len(self.users),
            **totals,
            "ctr": self.ratio("clicks").as_dict(),
            "conversion_rate": self.ratio("conversions").as_dict(),
            "hit_rate": self.ratio("hits").as_dict(),
        }


def outcomes(
    impressions: Iterable[Impression],
    events: Sequence[LoggedEvent],
    *,
    click_types: Sequence[str],
    conversion_types: Sequence[str],
    window: float = DEFAULT_WINDOW,
    key: str = "version",
) -> dict[str, GroupOutcomes]:
    """Each impression's outcome, gathered per user within groups by ``key`` (``version`` or ``arm``).

    ``events`` must be ordered by time (as :meth:`EventLog.time_range` returns them).
    Anonymous impressions (no user: a session's) count under the request id.
    """
    attributed: dict[str, list[LoggedEvent]] = defaultdict(list)
    by_user: dict[str, list[LoggedEvent]] = defaultdict(list)
    for logged in events:
        request_id = logged.event.request_id
        if request_id is not None:
            attributed[request_id].append(logged)
        by_user[logged.event.user_id].append(logged)
    times = {user: [e.event.timestamp for e in rows] for user, rows in by_user.items()}
    clicks, conversions = set(click_types), set(conversion_types)
    groups: dict[str, GroupOutcomes] = defaultdict(GroupOutcomes)
    for impression in impressions:
        shown = set(impression.items)
        group = getattr(impression, key) or "-"
        user = impression.user_id or impression.request_id
        row = groups[group].users.setdefault(user, UserOutcomes())
        row.impressions += 1
        answered = [
            e.event
            for e in attributed.get(impression.request_id, ())
            if e.event.item_id in shown and e.event.timestamp < impression.timestamp + window
        ]
        row.clicks += any(e.event_type in clicks for e in answered)
        row.conversions += any(e.event_type in conversions for e in answered)
        if impression.user_id in times:
            at = bisect.bisect_right(times[impression.user_id], impression.timestamp)
            following = by_user[impression.user_id]
            if at < len(following) and following[at].event.timestamp < impression.timestamp + window:
                row.hits += following[at].event.item_id in shown
    return dict(groups)


def online_metrics(
    store: Store,
    start: float,
    end: float,
    *,
    click_types: Sequence[str] = ("click",),
    conversion_types: Sequence[str] = ("purchase",),
    window: float = DEFAULT_WINDOW,
    key: str = "version",
) -> dict[str, dict[str, object]]:
    """Online metrics of the impressions shown in ``[start, end)``, per ``key`` (version or arm).

    Events up to ``window`` seconds after ``end`` still count for the last impressions.
    """
    shown = store.impressions.between(start, end)
    events = store.log.time_range(start, end + window)
    groups = outcomes(
        shown, events, click_types=click_types, conversion_types=conversion_types, window=window, key=key
    )
    return {name: group.summary() for name, group in sorted(groups.items())}
