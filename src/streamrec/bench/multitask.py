"""``streamrec bench multitask``: what weighting one event type's loss does to each type's hit rate.

The synthetic stream (:mod:`streamrec.data.synthetic`) has views, clicks, add-to-carts and
purchases; carts and purchases are the likelier the more a user likes the item's topic.
For each weight of the boosted type (every other type 1), the product's model is fitted
with ``type_weights`` as ``streamrec train --type-weight purchase=W`` sets them, on the
leave-one-out split (:mod:`streamrec.evaluation.offline`); its test targets are then scored
grouped by the target event's type: HR@10 and NDCG@10 of the purchases, of the views, ….
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.bench.offline import default_text_cache
from streamrec.bench.report import machine, plt, write_result
from streamrec.data.synthetic import StreamConfig, generate
from streamrec.evaluation.offline import evaluate, leave_one_out
from streamrec.events import EventSchema
from streamrec.items import validate_item
from streamrec.models.sasrec import SASRec, SASRecConfig
from streamrec.store import open_store
from streamrec.text import EmbeddingCache, TextEncoder
from streamrec.training.fit import prepare

Z95 = 1.96


def _figures(model: SASRec, histories: list[np.ndarray], targets: np.ndarray) -> dict[str, Any]:
    found = evaluate(model, histories, targets, unfiltered=False)
    hr = found["hr@10"]
    half_width = Z95 * math.sqrt(hr * (1 - hr) / max(len(targets), 1))  # a binomial share's interval
    return {
        "targets": len(targets),
        "hr@10": round(hr, 4),
        "hr@10_ci95": [round(max(0.0, hr - half_width), 4), round(min(1.0, hr + half_width), 4)],
        "ndcg@10": round(found["ndcg@10"], 4),
    }


def run_multitask_benchmark(
    *,
    out: Path,
    boosted: str = "purchase",
    weights: tuple[float, ...] = (1.0, 3.0, 10.0),
    users: int = 6000,
    items: int = 400,
    events_per_user: int = 40,
    epochs: int = 20,
    seed: int = 7,
    text_model: str = "all-MiniLM-L6-v2",
    progress: bool = True,
    command: str = "",
) -> dict[str, Any]:
    stream = generate(StreamConfig(users=users, items=items, events=users * events_per_user, seed=seed))
    schema = EventSchema()
    with tempfile.TemporaryDirectory(prefix="streamrec-multitask-") as scratch, open_store(scratch) as store:
        store.catalog.upsert(validate_item(record) for record in stream.items)
        store.log.append([schema.validate(event) for event in stream.events()])
        prepared = prepare(store)
    data = prepared.data
    if data.event_types is None or boosted not in data.type_names:
        raise ValueError(f"the stream has no {boosted!r} events to weigh")
    split = leave_one_out(data)
    evaluated = [u for u, sequence in enumerate(data.sequences) if len(sequence) >= 3]
    target_types = np.array([data.event_types[u][-1] for u in evaluated])
    encoder = TextEncoder(text_model, cache=EmbeddingCache(default_text_cache()))
    text = encoder.encode(prepared.texts, progress=progress)
    base = SASRecConfig(epochs=epochs, seed=seed)
    rows = []
    for weight in weights:
        config = replace(base, type_weights={boosted: weight})
        started = time.perf_counter()
        model = SASRec(config, text).fit(
            split.train, valid=(split.valid_histories, split.valid_targets), progress=progress
        )
        train_seconds = time.perf_counter() - started
        by_type = {}
        for code, name in enumerate(data.type_names):
            chosen = np.flatnonzero(target_types == code)
            if len(chosen):
                by_type[name] = _figures(
                    model, [split.test_histories[i] for i in chosen], split.test_targets[chosen]
                )
        rows.append(
            {
                "weight": weight,
                "all": _figures(model, split.test_histories, split.test_targets),
                "by_target_type": by_type,
                "epochs": model.training_log.epochs,
                "train_seconds": round(train_seconds, 1),
            }
        )
        if progress:
            summary = ", ".join(f"{name} {f['hr@10']:.4f}" for name, f in by_type.items())
            print(f"{boosted} weight {weight:g}: HR@10 by target type: {summary}")
    result = {
        "benchmark": "multitask",
        "command": command,
        "data": {
            "users": users,
            "items": items,
            "events": users * events_per_user,
            "seed": seed,
            "by": "streamrec.data.synthetic",
        },
        "protocol": "leave-one-out by time, full ranking, history excluded; targets grouped by event type",
        "model": {**base.to_dict(), "type_weights": f"{{{boosted!r}: weight}}"},
        "boosted": boosted,
        "runs": rows,
        "machine": machine(),
    }
    write_result(out, result)
    _plot(out.with_suffix(".png"), result)
    return result


def _plot(path: Path, result: dict[str, Any]) -> None:
    runs = result["runs"]
    names = list(runs[0]["by_target_type"])
    figure, axes = plt.subplots(figsize=(7.5, 3.8))
    width = 0.8 / len(runs)
    for n, run in enumerate(runs):
        figures = [run["by_target_type"][name] for name in names]
        heights = [f["hr@10"] for f in figures]
        errors = np.array(
            [[f["hr@10"] - f["hr@10_ci95"][0], f["hr@10_ci95"][1] - f["hr@10"]] for f in figures]
        ).T
        positions = np.arange(len(names)) + (n - (len(runs) - 1) / 2) * width
        label = f"{result['boosted']} × {run['weight']:g}"
        axes.bar(positions, heights, width, yerr=errors, capsize=2, label=label)
    counts = [runs[0]["by_target_type"][name]["targets"] for name in names]
    axes.set_xticks(
        np.arange(len(names)), [f"{name}\n({count})" for name, count in zip(names, counts, strict=True)]
    )
    axes.set_ylabel("HR@10 of targets of this type")
    axes.set_title(f"Weighting {result['boosted']}s in the next-item loss (synthetic stream)", fontsize=10)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
