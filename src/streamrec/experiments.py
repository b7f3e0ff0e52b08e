"""A/B tests between two registry versions: who sees which, and when one has won.

**Assignment.** A user is in arm ``b`` when an HMAC-SHA256 of their id, keyed by the
experiment's own random key, falls below ``share``: the same answer in every server
process and after every restart, independent between experiments, and not guessable
from the user id.

**Judging.** What each arm showed (impressions labelled ``EXPERIMENT/a`` or ``/b``) is
judged online (:mod:`streamrec.evaluation.online`) on the experiment's metric: the
click-through rate by default. The difference ``b - a`` of the two per-user ratios is
tested with a mixture sequential probability ratio test (mSPRT, Johari et al. 2017):
its p-value stays valid however often it is looked at, so ``ab status`` may be run
at any time and the guard may stop an experiment the moment one arm is significantly
worse, without inflating the false-positive rate above ``alpha``. The fixed-horizon
z-test's p-value is reported beside it, for reference only.

**Interleaving.** With ``method="interleave"`` every user sees one list merged from
both versions' rankings by team draft (:mod:`streamrec.evaluation.interleaving`), and
each answer with a credited click is won by the version whose items got more of them.
The difference is then ``(answers b won - answers a won) / answers with a credited
click``, per user by the delta method, tested by the same mSPRT: a more sensitive test
of which version ranks better, at the price of one more forward pass per request.

**Ending.** ``stop`` ends the experiment (every user gets the live version again) and
keeps its last figures; ``stop(promote=…)`` promotes the winner through the registry,
so rollback works as after any promotion.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from scipy.stats import norm

from streamrec.config import OnlineSettings
from streamrec.evaluation.interleaving import preferences
from streamrec.evaluation.online import Ratio, outcomes
from streamrec.registry import Registry
from streamrec.store import Store

Arm = Literal["a", "b"]
Metric = Literal["clicks", "conversions", "hits"]
Method = Literal["split", "interleave"]
ARMS: tuple[Arm, Arm] = ("a", "b")
# The mixture's spread of effects, relative to the pooled rate: effects of about 20 % are expected.
# Interleaving's difference is already a share (of answers with a credited click): 0.2 of them.
RELATIVE_EFFECT = 0.2
INTERLEAVED = "ab"  # the label's arm part of an interleaved answer: both arms answered


class ExperimentError(ValueError):
    """An experiment request that cannot be done (no such version, one already running…)."""


@dataclass(frozen=True)
class Experiment:
    """Arm ``a`` answers with version ``a``, arm ``b`` (a ``share`` of users) with ``b``; or, with
    ``method`` ``interleave``, both answer every user in one team-draft list."""

    id: str
    a: str
    b: str
    share: float
    key: str  # hex HMAC key of the assignment
    started_at: float
    metric: Metric = "clicks"
    alpha: float = 0.05
    method: Method = "split"
    stopped_at: float | None = None
    result: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def running(self) -> bool:
        return self.stopped_at is None

    def arm_of(self, user_id: str) -> Arm:
        digest = hmac.new(bytes.fromhex(self.key), user_id.encode(), hashlib.sha256).digest()
        return "b" if int.from_bytes(digest[:8], "big") / 2**64 < self.share else "a"

    def version_of(self, arm: Arm) -> str:
        return self.a if arm == "a" else self.b

    @property
    def interleaved(self) -> bool:
        return self.method == "interleave"

    def label(self, arm: str) -> str:
        """How an impression of this arm (or of both: :data:`INTERLEAVED`) is labelled (its ``arm``)."""
        return f"{self.id}/{arm}"


def experiments(registry: Registry) -> list[Experiment]:
    return [Experiment(**stored) for stored in registry.experiments()]


def running(registry: Registry) -> Experiment | None:
    return next((e for e in experiments(registry) if e.running), None)


def start(
    registry: Registry,
    a: str,
    b: str,
    *,
    share: float = 0.5,
    metric: Metric = "clicks",
    alpha: float = 0.05,
    method: Method = "split",
) -> Experiment:
    """Start an experiment between two stored versions; at most one runs at a time."""
    known = {v.version for v in registry.versions()}
    for arm, version in (("a", a), ("b", b)):
        if version not in known:
            raise ExperimentError(f"arm {arm}: no version {version!r} in the registry")
    if not 0 < share < 1:
        raise ExperimentError(f"share must be between 0 and 1 (the part of users in arm b), not {share}")
    if not 0 < alpha < 1:
        raise ExperimentError(f"alpha must be between 0 and 1, not {alpha}")
    if metric not in ("clicks", "conversions", "hits"):
        raise ExperimentError(f"metric must be clicks, conversions or hits, not {metric!r}")
    if method not in ("split", "interleave"):
        raise ExperimentError(f"method must be split or interleave, not {method!r}")
    if method == "interleave" and metric == "hits":
        raise ExperimentError("an interleaved experiment is decided by clicks or conversions, not hits")

    def add(stored: list[dict[str, Any]]) -> list[dict[str, Any]]:
        current = [Experiment(**s) for s in stored]
        if any(e.running for e in current):
            raise ExperimentError(
                f"experiment {next(e.id for e in current if e.running)} is running: stop it first"
            )
        experiment = Experiment(
            f"x{len(current) + 1:04d}", a, b, share, secrets.token_hex(16), time.time(), metric, alpha, method
        )
        return [*stored, asdict(experiment)]

    return Experiment(**registry.change_experiments(add)[-1])


def stop(registry: Registry, result: dict[str, Any] | None = None) -> Experiment:
    """End the running experiment, keeping ``result`` (its last judgement) with it."""

    ended: list[str] = []

    def end(stored: list[dict[str, Any]]) -> list[dict[str, Any]]:
        current = [Experiment(**s) for s in stored]
        ended.extend(e.id for e in current if e.running)
        if not ended:
            raise ExperimentError("no experiment is running")
        return [
            asdict(replace(e, stopped_at=time.time(), result=result) if e.running else e) for e in current
        ]

    return next(Experiment(**s) for s in registry.change_experiments(end) if s["id"] == ended[0])


def msprt_p_value(difference: float, variance: float, tau2: float) -> float:
    """The mixture SPRT's p-value for ``difference`` (variance ``variance``) under a N(0, tau2) mixture:
    ``1 / Λ``, with Λ = sqrt(V / (V + τ²)) · exp(θ² τ² / (2 V (V + τ²)))."""
    if not (variance > 0 and math.isfinite(variance)) or tau2 <= 0:
        return 1.0
    log_lambda = 0.5 * math.log(variance / (variance + tau2)) + difference**2 * tau2 / (
        2 * variance * (variance + tau2)
    )
    return min(1.0, math.exp(-log_lambda))


def judge(
    experiment: Experiment, store: Store, online: OnlineSettings, *, now: float | None = None
) -> dict[str, Any]:
    """Per-arm online figures, the difference ``b - a`` on the experiment's metric, and the decision.

    ``decision`` is ``b`` or ``a`` (that arm is significantly better: the other one should
    stop), or ``undecided``.
    """
    end = experiment.stopped_at or (time.time() if now is None else now)
    if experiment.interleaved:
        return _judge_interleaved(experiment, store, online, end)
    labels = {experiment.label(arm): arm for arm in ARMS}
    shown = [i for i in store.impressions.between(experiment.started_at, end) if i.arm in labels]
    events = store.log.time_range(experiment.started_at, end + online.window_seconds)
    groups = outcomes(
        shown,
        events,
        click_types=online.click_types,
        conversion_types=online.conversion_types,
        window=online.window_seconds,
        key="arm",
    )
    ratios: dict[Arm, Ratio] = {}
    arms: dict[str, Any] = {}
    for label, arm in labels.items():
        group = groups.get(label)
        ratios[arm] = group.ratio(experiment.metric) if group else Ratio(0.0, 0.0, 0.0, math.inf)
        arms[arm] = {
            "version": experiment.version_of(arm),
            **(group.summary() if group else {"impressions": 0}),
        }
    a, b = ratios["a"], ratios["b"]
    pooled = (a.numerator + b.numerator) / max(a.denominator + b.denominator, 1)
    return _verdict(experiment, arms, b.rate - a.rate, a.stderr**2 + b.stderr**2, RELATIVE_EFFECT * pooled)


def _judge_interleaved(
    experiment: Experiment, store: Store, online: OnlineSettings, end: float
) -> dict[str, Any]:
    """Wins of each version's team in the interleaved answers; the difference is a share of answers."""
    label = experiment.label(INTERLEAVED)
    shown = [i for i in store.impressions.between(experiment.started_at, end) if i.arm == label]
    events = store.log.time_range(experiment.started_at, end + online.window_seconds)
    types = online.click_types if experiment.metric == "clicks" else online.conversion_types
    users = list(preferences(shown, events, event_types=types, window=online.window_seconds).values())
    credited = [u.credited for u in users]
    wins = {arm: Ratio.over_users([getattr(u, f"wins_{arm}") for u in users], credited) for arm in ARMS}
    margin = Ratio.over_users([u.wins_b - u.wins_a for u in users], credited)
    arms = {
        arm: {
            "version": experiment.version_of(arm),
            "users": len(users),
            "impressions": sum(u.answers for u in users),
            experiment.metric: sum(getattr(u, f"events_{arm}") for u in users),
            "wins": wins[arm].as_dict(),
        }
        for arm in ARMS
    }
    return _verdict(experiment, arms, margin.rate, margin.stderr**2, RELATIVE_EFFECT)


def _verdict(
    experiment: Experiment, arms: dict[str, Any], difference: float, variance: float, effect: float
) -> dict[str, Any]:
    """The judgement of ``difference`` (``b - a``): its interval, p-values and decision."""
    p_sequential = msprt_p_value(difference, variance, effect**2)
    p_fixed = float(2 * norm.sf(abs(difference) / math.sqrt(variance))) if 0 < variance < math.inf else 1.0
    decision = "undecided"
    if p_sequential < experiment.alpha:
        decision = "b" if difference > 0 else "a"
    return {
        "experiment": experiment.id,
        "method": experiment.method,
        "metric": experiment.metric,
        "alpha": experiment.alpha,
        "running": experiment.running,
        "arms": arms,
        "difference": round(difference, 6),
        "difference_ci95": [
            round(difference - 1.96 * math.sqrt(variance), 6),
            round(difference + 1.96 * math.sqrt(variance), 6),
        ]
        if math.isfinite(variance)
        else None,
        "p_value": p_sequential,
        "p_value_fixed_horizon": p_fixed,
        "decision": decision,
    }


def guard(registry: Registry, store: Store, online: OnlineSettings) -> Experiment | None:
    """Stop the running experiment if its arm ``b`` is significantly worse; the stopped one, or None.

    The mSPRT's p-value may be checked this often without raising the false-positive rate.
    When ``b`` wins instead, the experiment runs on until someone stops it (and promotes b).
    """
    current = running(registry)
    if current is None:
        return None
    judgement = judge(current, store, online)
    if judgement["decision"] != "a":
        return None
    return stop(
        registry, {**judgement, "running": False, "stopped_by": "guard: arm b is significantly worse"}
    )


def conclude(
    registry: Registry, store: Store, online: OnlineSettings, promote: str = "none"
) -> dict[str, Any]:
    """Stop the running experiment with its last judgement; ``promoted`` names the version to make
    live (``promote``: ``winner`` if there is a significant one, ``a``, ``b``; ``none``: nothing)."""
    current = running(registry)
    if current is None:
        raise LookupError("no experiment is running")
    judgement = {**judge(current, store, online), "running": False}
    stop(registry, judgement)
    decision = judgement["decision"] if promote == "winner" else promote
    judgement["promoted"] = current.version_of(decision) if decision in ARMS else None
    return judgement


def public(experiment: Experiment) -> dict[str, Any]:
    """The experiment as shown to users: without its assignment key."""
    return {k: v for k, v in asdict(experiment).items() if k != "key"}
