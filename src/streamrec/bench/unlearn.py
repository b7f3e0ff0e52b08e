"""``streamrec bench unlearn``: does forget + unlearn take out what a model memorised of a user?

Canary users are planted in the synthetic stream: canary ``c`` alternates two catalogue items
``A_c, B_c, A_c, B_c, …``, so that for the model "B after A" is something only they taught
it (other users meet those items, in no such order). Three models are trained through the
product's path (``streamrec train``):

1. **before**: the stream with the canaries;
2. **after**: each canary forgotten (``streamrec forget``, timed) and the home unlearned
   (``streamrec unlearn``: a refit without them, the tainted versions erased);
3. **never**: a home that never held the canaries, trained with another seed (what a model
   that never saw them ranks, seed noise included).

Each model ranks B_c after the session ``A_c, B_c, A_c, B_c, A_c`` (the canary's own
pattern; ``Runtime.recommend_session``, the server's path, nothing excluded); the result gives
the three rank distributions. A model that never saw a canary ranks B_c only as it ranks any
item a user has just met twice.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.bench.report import machine, plt, write_result
from streamrec.config import PrivacySettings, Settings
from streamrec.data.synthetic import StreamConfig, generate
from streamrec.events import Event, EventSchema
from streamrec.home import Home
from streamrec.items import validate_item
from streamrec.models.sasrec import SASRecConfig
from streamrec.privacy import forget_user, unlearn
from streamrec.serving.runtime import Runtime
from streamrec.store import open_store
from streamrec.training.continual import train_and_register

TEXT_MODEL = "all-MiniLM-L6-v2"


def _canary_events(pairs: list[tuple[str, str]], repeats: int, start: float) -> list[Event]:
    """Canary ``c`` (user ``canary-c``) alternates A_c and B_c ``repeats`` times, a minute apart."""
    events = []
    for c, (a, b) in enumerate(pairs):
        for r in range(repeats):
            at = start + 60.0 * (2 * r)
            events.append(Event(f"canary-{c}", a, "view", at + c, None, f"canary-{c}-{r}-a"))
            events.append(Event(f"canary-{c}", b, "view", at + 60.0 + c, None, f"canary-{c}-{r}-b"))
    return events


def _ranks(home: Path, pairs: list[tuple[str, str]]) -> list[int]:
    """1-based rank of B_c among every item after the session A_c, B_c, A_c, B_c, A_c (the
    canary's own pattern; nothing excluded, so B_c can rank)."""
    with Runtime.open(home) as runtime:
        n = len(runtime.loaded.items)
        ranks = []
        for a, b in pairs:
            answer = runtime.recommend_session([a, b, a, b, a], n, exclude_seen=False)
            shown = [entry["item_id"] for entry in answer["items"]]
            ranks.append(shown.index(b) + 1 if b in shown else n)
    return ranks


def _summary(ranks: list[int]) -> dict[str, Any]:
    return {
        "ranks": ranks,
        "median": float(np.median(ranks)),
        "in_top_10": int(sum(rank <= 10 for rank in ranks)),
        "min": int(min(ranks)),
        "max": int(max(ranks)),
    }


def run_unlearn_benchmark(
    *,
    out: Path,
    canaries: int = 10,
    repeats: int = 25,
    users: int = 1000,
    items: int = 400,
    events_per_user: int = 20,
    epochs: int = 20,
    seed: int = 7,
    progress: bool = True,
    command: str = "",
) -> dict[str, Any]:
    stream = generate(StreamConfig(users=users, items=items, events=users * events_per_user, seed=seed))
    schema = EventSchema()
    events = [schema.validate(event) for event in stream.events()]
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(stream.items), size=2 * canaries, replace=False)
    ids = [stream.items[int(i)]["item_id"] for i in chosen]
    pairs = list(zip(ids[::2], ids[1::2], strict=True))
    times = sorted(event.timestamp for event in events)
    planted = _canary_events(pairs, repeats, times[len(times) // 3])  # well inside what a fit learns
    settings = Settings(privacy=PrivacySettings(unlearn_after_seconds=0))
    with tempfile.TemporaryDirectory(prefix="streamrec-unlearn-") as scratch:
        homes = {name: Path(scratch) / name for name in ("canaries", "never")}
        for name, home in homes.items():
            with open_store(home) as store:
                store.catalog.upsert(validate_item(record) for record in stream.items)
                # In time order, so the canaries' offsets sit where a fit learns them, not in its holdout.
                logged = events + planted if name == "canaries" else events
                store.log.append(sorted(logged, key=lambda event: event.timestamp))
        started = time.perf_counter()
        home = Home(homes["canaries"], settings)
        train_and_register(
            home, SASRecConfig(epochs=epochs, seed=seed), text_model=TEXT_MODEL, progress=progress
        )
        train_seconds = time.perf_counter() - started
        before = _ranks(homes["canaries"], pairs)
        forget_seconds = []
        for c in range(canaries):
            begun = time.perf_counter()
            forget_user(home, f"canary-{c}", requested_by="bench unlearn")
            forget_seconds.append(time.perf_counter() - begun)
        done = unlearn(home, progress=progress)
        after = _ranks(homes["canaries"], pairs)
        never_home = Home(homes["never"], settings)
        config = SASRecConfig(epochs=epochs, seed=seed + 1)
        train_and_register(never_home, config, text_model=TEXT_MODEL, progress=progress)
        never = _ranks(homes["never"], pairs)
        n_items = len(stream.items)
    reference = _summary(never)
    result = {
        "benchmark": "unlearn",
        "command": command,
        "data": {"users": users, "items": items, "events": len(events), "seed": seed},
        "canaries": {"users": canaries, "repeats": repeats, "events": len(planted), "pairs": pairs},
        "protocol": "rank (1 = best, of every item) of B_c after the session A_c,B_c,A_c,B_c,A_c, through"
        " Runtime.recommend_session (seen items not excluded); before: trained with the canaries;"
        " after: each forgotten, then unlearned (a refit without them); never: a home that never held"
        " them, another seed",
        "catalogue_items": n_items,
        "before": _summary(before),
        "after": _summary(after),
        "never": reference,
        "after_within_never_range": int(sum(reference["min"] <= r <= reference["max"] for r in after)),
        "forget_seconds_median": round(float(np.median(forget_seconds)), 4),
        "forget_seconds_max": round(float(max(forget_seconds)), 4),
        "unlearn_seconds": done.seconds,
        "unlearn_live": done.live,
        "unlearn_how": done.how,
        "erased": done.erased,
        "train_seconds": round(train_seconds, 1),
        "machine": machine(),
    }
    write_result(out, result)
    _plot(out.with_suffix(".png"), result)
    return result


def _plot(path: Path, result: dict[str, Any]) -> None:
    figure, axes = plt.subplots(figsize=(6.5, 3.8))
    groups = [("before forget", "before", "#C44E52"), ("after unlearn", "after", "#4C72B0")]
    groups.append(("never trained on them", "never", "#55A868"))
    for x, (_, key, colour) in enumerate(groups):
        ranks = result[key]["ranks"]
        jitter = np.linspace(-0.15, 0.15, len(ranks))
        axes.scatter(x + jitter, ranks, color=colour, s=18)
        axes.annotate(f"median {result[key]['median']:g}", (x, max(ranks)), fontsize=7, ha="center",
                      xytext=(0, 6), textcoords="offset points")  # fmt: skip
    axes.axhline(10, color="grey", lw=0.8, ls="--")
    axes.set_xticks(range(len(groups)), [label for label, _, _ in groups], fontsize=8)
    axes.set_yscale("log")
    axes.set_ylabel(f"rank of B after A (of {result['catalogue_items']} items)")
    axes.set_title("Canary users: what the model memorised, before and after unlearning", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
