"""``streamrec bench ab``: A/A and A/B tests with simulated users, through the server's HTTP API.

The scenario is the synthetic stream with one taste drift at half time:

* ``v0001`` is fitted on the events before the drift (stale), ``v0002`` on all of them
  (updated, live), ``v0003`` is ``v0002`` with re-drawn random weights (broken: random
  recommendations); all ID-tower models, so the stale one cannot rank the items released
  after its fit (a third of the catalogue is released over the timeline);
* simulated users (:mod:`streamrec.data.shoppers`) react with their post-drift tastes.

Every visit is the product's path: ``GET /recommend/{user}`` on the app (in this process,
through FastAPI's test client), then the user's clicks and purchases ``POST /events``
with the answer's ``request_id``. Experiments start and are judged through ``/admin/ab``;
the guard is the update worker's (:func:`streamrec.experiments.guard`).

1. **A/A**: ``runs`` experiments of ``v0002`` against itself, each with a fresh
   assignment key and fresh reactions, looked at after every ``look`` users; a run is a
   false positive if *any* look declares a winner (the test is meant to be watched).
2. **Drift**: stale ``v0001`` (a) against updated ``v0002`` (b): users until p < 0.01.
3. **Broken arm**: ``v0002`` (a) against ``v0003`` (b): users until the guard stops it.
4. **Interleaved**: the A/A runs and the drift scenario again with team-draft
   interleaving (``method="interleave"``): both versions answer every visit in one list.
   The literature finds it needs far fewer users than a split; this run measures it here.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastapi.testclient import TestClient

from streamrec import experiments
from streamrec.bench.report import plt, write_result
from streamrec.config import Settings
from streamrec.data.shoppers import Shoppers
from streamrec.data.synthetic import StreamConfig, generate
from streamrec.events import EventSchema
from streamrec.home import Home
from streamrec.items import validate_item
from streamrec.models.sasrec import SASRec, SASRecConfig
from streamrec.serving.app import create_app
from streamrec.store import open_store
from streamrec.training.continual import train_and_register

KEY = "bench-ab-key"
ADMIN = {"X-API-Key": KEY}
DECIDED_P = 0.01  # the drift scenario's bar: the updated version wins with p below this
# Shoppers click 0.25 × their preference for an item's topic: at the default 0.6 nearly every
# list earns a click and the CTR (share of answers clicked) cannot tell lists apart.
CLICK_SCALE = 0.25


def build_home(
    home: Path, stream_config: StreamConfig, model: SASRecConfig, progress: bool
) -> dict[str, Any]:
    """Ingest and fit the three versions of the scenario; the stream's truth."""
    stream = generate(stream_config)
    drift = stream.truth["drift_timestamps"][0]
    schema = EventSchema()
    events = [schema.validate(e) for e in stream.events()]
    with open_store(home) as store:
        store.catalog.upsert(validate_item(record) for record in stream.items)
        store.log.append([e for e in events if e.timestamp < drift])
    settings = Home(home, Settings())
    train_and_register(settings, model, text_model="all-MiniLM-L6-v2", progress=progress)  # v0001, stale
    with open_store(home) as store:
        store.log.append([e for e in events if e.timestamp >= drift])
    train_and_register(settings, model, text_model="all-MiniLM-L6-v2", progress=progress)  # v0002, live
    registry = settings.registry
    broken = SASRec.load(registry.path("v0002"))
    assert broken.net is not None
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in broken.net.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    info = registry.get("v0002").to_dict()
    kept = {k: info[k] for k in ("trained_through_offset", "text_model")}
    registry.add(broken.save, registry.items("v0002"), {"status": "candidate", "strategy": "broken", **kept})
    return stream.truth


def visit(client: TestClient, shoppers: Shoppers, user: str) -> None:
    """One visit: the user's recommendations, then what they clicked and bought, sent back."""
    answer = client.get(f"/recommend/{user}", params={"k": 10}, headers=ADMIN).json()
    events = shoppers.respond(user, answer)
    if events:
        response = client.post("/events", json=events, headers=ADMIN)
        assert response.status_code == 200, response.text


def run_experiment(
    client: TestClient,
    home: Path,
    shoppers: Shoppers,
    a: str,
    b: str,
    users: int,
    look: int,
    *,
    guarded: bool,
    method: str = "split",
) -> dict[str, Any]:
    """Start ``a`` vs ``b``, let ``users`` simulated visits happen, look every ``look`` of them."""
    started = client.post("/admin/ab", json={"a": a, "b": b, "method": method}, headers=ADMIN)
    assert started.status_code == 201, started.text
    settings = Home(home, Settings())
    looks = []
    stopped_after = None
    order = shoppers.sample(len(shoppers.users))
    for n in range(1, users + 1):
        visit(client, shoppers, order[(n - 1) % len(order)])  # past the last user, the first come back
        if n % look and n != users:
            continue
        client.app.state.impressions.flush()  # what the recorder thread does every 0.2 s
        status = client.get("/admin/ab", headers=ADMIN).json()
        looks.append(
            {
                "users": n,
                "p_value": status["p_value"],
                "decision": status["decision"],
                "difference": status["difference"],
            }
        )
        if guarded:
            with open_store(home) as store:
                if experiments.guard(settings.registry, store, settings.settings.online) is not None:
                    stopped_after = n
                    break
    if experiments.running(settings.registry) is not None:
        final = client.post("/admin/ab/stop", json={"promote": "none"}, headers=ADMIN).json()
    else:
        final = experiments.experiments(settings.registry)[-1].result or {}
    client.app.state.runtime.follow_experiment()
    return {"looks": looks, "stopped_by_guard_after_users": stopped_after, "final": final}


def run_ab_benchmark(
    *,
    out: Path,
    work_dir: Path,
    runs: int = 40,
    users: int = 300,
    ab_visits: int = 12000,
    interleave_visits: int = 12000,
    look: int = 50,
    seed: int = 7,
    stream_users: int = 600,
    progress: bool = True,
) -> dict[str, Any]:
    started = time.perf_counter()
    home = work_dir / "home"
    stream_config = StreamConfig(
        users=stream_users, items=300, events=stream_users * 50, seed=seed, drift_at=(0.5,)
    )
    # ID tower: the stale version cannot rank the items released after its fit, as a stale model
    # would not know a refreshed catalogue's items.
    model = SASRecConfig(item_tower="id", hidden=32, layers=1, max_len=30, epochs=10)
    truth = build_home(home, stream_config, model, progress)
    result: dict[str, Any] = {
        "benchmark": "ab",
        "machine": platform.platform(),
        "scenario": {
            "stream": {"users": stream_users, "items": 300, "events": stream_users * 50, "seed": seed},
            "stale": "v0001",
            "updated": "v0002",
            "broken": "v0003",
        },
        "users_per_run": users,
        "visits_per_ab_run": ab_visits,
        "visits_per_interleaved_run": interleave_visits,
        "look_every_users": look,
    }
    with TestClient(create_app(home, api_key=KEY)) as client:

        def aa_runs(method: str) -> list[dict[str, Any]]:
            done = []
            for run in range(runs):
                shoppers = Shoppers(truth, seed=seed * 1000 + run, click_scale=CLICK_SCALE)
                done.append(
                    run_experiment(
                        client, home, shoppers, "v0002", "v0002", users, look, guarded=False, method=method
                    )
                )
                if progress:
                    print(f"A/A {method} run {run + 1}/{runs}: decision {done[-1]['final'].get('decision')}")
            return done

        aa = aa_runs("split")
        drift = run_experiment(
            client,
            home,
            Shoppers(truth, seed=seed, click_scale=CLICK_SCALE),
            "v0001",
            "v0002",
            ab_visits,
            look,
            guarded=False,
        )
        broken = run_experiment(
            client,
            home,
            Shoppers(truth, seed=seed + 1, click_scale=CLICK_SCALE),
            "v0002",
            "v0003",
            ab_visits,
            look,
            guarded=True,
        )
        aa_interleaved = aa_runs("interleave")
        drift_interleaved = run_experiment(
            client,
            home,
            Shoppers(truth, seed=seed, click_scale=CLICK_SCALE),
            "v0001",
            "v0002",
            interleave_visits,
            look,
            guarded=False,
            method="interleave",
        )
    result.update(
        {
            "aa": _aa_summary(aa),
            "drift": {"users_until_p_below_0.01": _first_win(drift), **drift},
            "broken": broken,
            "interleave": {
                "aa": _aa_summary(aa_interleaved),
                "drift": {"users_until_p_below_0.01": _first_win(drift_interleaved), **drift_interleaved},
            },
            "seconds": round(time.perf_counter() - started, 1),
        }
    )
    write_result(out, result)
    _plot(out.with_suffix(".png"), result)
    return result


def _aa_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A/A runs: a false positive is a run where any look declared a winner."""
    false_positives = sum(any(look["decision"] != "undecided" for look in run["looks"]) for run in runs)
    return {
        "runs": len(runs),
        "false_positives": false_positives,
        "false_positive_rate": false_positives / max(len(runs), 1),
        "alpha": 0.05,
        "final_p_values": [run["final"].get("p_value") for run in runs],
        "final_fixed_horizon_p_values": [run["final"].get("p_value_fixed_horizon") for run in runs],
    }


def _first_win(run: dict[str, Any]) -> int | None:
    """Visits until the updated arm ``b`` first won with p below :data:`DECIDED_P`."""
    wins = (look["users"] for look in run["looks"] if look["decision"] == "b" and look["p_value"] < DECIDED_P)
    return next(wins, None)


def _plot(path: Path, result: dict[str, Any]) -> None:
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    fixed = [p for p in result["aa"]["final_fixed_horizon_p_values"] if p is not None]
    left.hist(fixed, bins=np.linspace(0, 1, 11), color="#4C72B0")
    interleaved = result["interleave"]
    left.hist(
        [p for p in interleaved["aa"]["final_fixed_horizon_p_values"] if p is not None],
        bins=np.linspace(0, 1, 11),
        color="#DD8452",
        alpha=0.6,
    )
    left.set_title(f"A/A: fixed-horizon p at the end ({result['aa']['runs']} runs; sequential false"
                   f" positives split {result['aa']['false_positives']},"
                   f" interleaved {interleaved['aa']['false_positives']})", fontsize=9)  # fmt: skip
    left.set_xlabel("p-value")
    labels = {
        "drift": "stale a vs updated b (split)",
        "broken": "live a vs broken b (split)",
        "interleaved": "stale a vs updated b (interleaved)",
    }
    runs = {"drift": result["drift"], "broken": result["broken"], "interleaved": interleaved["drift"]}
    for name, colour in (("drift", "#55A868"), ("broken", "#C44E52"), ("interleaved", "#DD8452")):
        looks = runs[name]["looks"]
        p_values = [max(look["p_value"], 1e-12) for look in looks]
        right.plot([look["users"] for look in looks], p_values, "o-", color=colour, label=labels[name])
    right.axhline(0.05, color="grey", linestyle=":", label="alpha 0.05")
    right.axhline(DECIDED_P, color="black", linestyle="--", label="0.01")
    right.set_yscale("log")
    right.set_xlabel("simulated users so far")
    right.set_ylabel("sequential p-value")
    right.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
