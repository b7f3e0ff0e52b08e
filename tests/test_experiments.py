"""A/B tests: assignment, the sequential test, the registry's bookkeeping, the guard and the CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from streamrec import experiments
from streamrec.cli import main
from streamrec.config import OnlineSettings
from streamrec.events import Event
from streamrec.experiments import Experiment, ExperimentError, msprt_p_value
from streamrec.registry import Registry
from streamrec.store import Impression, open_store


def experiment(share: float = 0.3, key: str = "00" * 16) -> Experiment:
    return Experiment("x0001", "v0001", "v0002", share, key, 0.0)


def test_assignment_is_stable_keyed_and_splits_by_share() -> None:
    users = [f"user-{n}" for n in range(20_000)]
    first = experiment()
    arms = [first.arm_of(u) for u in users]
    assert arms == [first.arm_of(u) for u in users]  # deterministic
    assert np.mean([arm == "b" for arm in arms]) == pytest.approx(0.3, abs=0.015)
    other = experiment(key="ab" * 16)  # another experiment: an independent split
    both = np.mean([(a == "b") == (other.arm_of(u) == "b") for u, a in zip(users, arms, strict=True)])
    assert both == pytest.approx(0.3 * 0.3 + 0.7 * 0.7, abs=0.015)


def test_the_sequential_p_value_grows_with_evidence() -> None:
    assert msprt_p_value(0.0, 1e-4, 1e-4) == 1.0  # no difference: no evidence
    weak, strong = msprt_p_value(0.01, 1e-4, 1e-4), msprt_p_value(0.05, 1e-4, 1e-4)
    assert strong < 0.01 < weak <= 1.0  # z = 5 against z = 1 (the sequential test is conservative)
    assert msprt_p_value(0.05, float("inf"), 1e-4) == 1.0  # no users yet


def registry_with_versions(root: Path, names: tuple[str, ...] = ("v0001", "v0002", "v0003")) -> Registry:
    registry = Registry(root)
    for _ in names:  # numbered v0001, v0002, … as they come
        registry.add(lambda folder: None, ["i1"], {"status": "candidate", "trained_through_offset": 0})
    return registry


def test_start_stop_and_pruning_keeps_the_versions_of_a_running_experiment(tmp_path: Path) -> None:
    registry = registry_with_versions(tmp_path / "models")
    registry.promote("v0003")
    with pytest.raises(ExperimentError, match="arm b: no version 'v0009'"):
        experiments.start(registry, "v0003", "v0009")
    with pytest.raises(ExperimentError, match="share must be between 0 and 1"):
        experiments.start(registry, "v0003", "v0001", share=1.0)
    started = experiments.start(registry, "v0003", "v0001")
    with pytest.raises(ExperimentError, match=f"experiment {started.id} is running"):
        experiments.start(registry, "v0003", "v0002")
    assert registry.prune(1) == ["v0002"]  # v0001 is arm b: kept
    stopped = experiments.stop(registry, {"decision": "undecided"})
    assert stopped.id == started.id and not stopped.running and stopped.result == {"decision": "undecided"}
    assert experiments.running(registry) is None
    with pytest.raises(ExperimentError, match="no experiment is running"):
        experiments.stop(registry)
    assert registry.prune(1) == ["v0001"]


def shown_and_clicked(
    store, experiment: Experiment, users: list[str], rates: dict[str, float], seed: int
) -> None:
    """Ten impressions per user; each clicked with the user's arm's rate."""
    rng = np.random.default_rng(seed)
    now = time.time()
    impressions, events = [], []
    for u, user in enumerate(users):
        arm = experiment.arm_of(user)
        for n in range(10):
            request_id = f"{experiment.id}-{u}-{n}"
            impressions.append(
                Impression(
                    request_id,
                    now,
                    user,
                    experiment.version_of(arm),
                    "recommend",
                    ("i1",),
                    experiment.label(arm),
                )
            )
            if rng.random() < rates[arm]:
                events.append(Event(user, "i1", "click", now + 1, context={"request_id": request_id}))
    store.impressions.append(impressions)
    store.log.append(events)


def test_the_guard_stops_a_much_worse_arm_b_and_leaves_an_even_one_running(tmp_path: Path) -> None:
    registry = registry_with_versions(tmp_path / "models")
    users = [f"u{n}" for n in range(400)]
    with open_store(tmp_path) as store:
        even = experiments.start(registry, "v0001", "v0002")
        shown_and_clicked(store, even, users, {"a": 0.2, "b": 0.2}, seed=1)
        assert experiments.guard(registry, store, OnlineSettings()) is None
        judgement = experiments.judge(even, store, OnlineSettings())
        assert judgement["decision"] == "undecided" and judgement["arms"]["a"]["impressions"] > 1000
        experiments.stop(registry)

        broken = experiments.start(registry, "v0001", "v0003")
        shown_and_clicked(store, broken, users, {"a": 0.2, "b": 0.02}, seed=2)
        stopped = experiments.guard(registry, store, OnlineSettings())
        assert stopped is not None and stopped.id == broken.id
        assert stopped.result["decision"] == "a" and stopped.result["p_value"] < 0.05
        assert stopped.result["stopped_by"].startswith("guard")


def test_the_ab_command_starts_reports_and_stops_with_the_winner_promoted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "recs"
    registry = registry_with_versions(home / "models")
    registry.promote("v0001")
    assert main(["ab", "start", "--home", str(home), "--b", "v0002", "--share", "0.5"]) == 0
    assert "a = v0001, b = v0002" in capsys.readouterr().out
    current = experiments.running(registry)
    with open_store(home) as store:
        shown_and_clicked(store, current, [f"u{n}" for n in range(400)], {"a": 0.05, "b": 0.3}, seed=3)
    assert main(["ab", "status", "--home", str(home), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (
        status["decision"] == "b" and status["arms"]["b"]["ctr"]["rate"] > status["arms"]["a"]["ctr"]["rate"]
    )
    assert main(["ab", "stop", "--home", str(home), "--promote", "winner"]) == 0
    assert "v0002 is live" in capsys.readouterr().out and registry.live() == "v0002"
    assert main(["ab", "list", "--home", str(home), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0]["result"]["decision"] == "b" and "key" not in listed[0]
    assert main(["ab", "status", "--home", str(home)]) == 2  # none running: a clear error
    assert "no experiment is running" in capsys.readouterr().err
