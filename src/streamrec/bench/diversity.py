"""``streamrec bench diversity``: what the diversity knob costs in accuracy, and what it buys.

Each user's last event of the synthetic stream is held out; the rest is ingested and the
product's model trained on it (``streamrec train``'s path). For each diversity value, every
user's history is answered as ``POST /recommend`` answers an anonymous session (the
runtime's path: the top 5·k by score, then maximal marginal relevance) and scored against
the held-out item: NDCG@10 and HR@10, beside two measures of variety: intra-list
diversity (1 - mean cosine of the list's items under the model's vectors) and the number of
distinct planted topics among the ten (the stream's truth, which the model never sees).
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.bench.report import machine, plt, write_result
from streamrec.config import Settings
from streamrec.data.synthetic import StreamConfig, generate
from streamrec.events import EventSchema
from streamrec.home import Home
from streamrec.items import validate_item
from streamrec.models.sasrec import SASRecConfig
from streamrec.serving.rerank import intra_list_diversity
from streamrec.serving.runtime import Runtime
from streamrec.store import open_store
from streamrec.training.continual import train_and_register

K = 10


def run_diversity_benchmark(
    *,
    out: Path,
    values: tuple[float, ...] = (0.0, 0.1, 0.3, 0.5, 0.7),
    users: int = 2000,
    items: int = 400,
    events_per_user: int = 30,
    epochs: int = 20,
    seed: int = 7,
    progress: bool = True,
    command: str = "",
) -> dict[str, Any]:
    stream = generate(StreamConfig(users=users, items=items, events=users * events_per_user, seed=seed))
    schema = EventSchema()
    events = [schema.validate(event) for event in stream.events()]
    last: dict[str, int] = {}
    for n, event in enumerate(events):
        last[event.user_id] = n
    held_out = set(last.values())
    topics = stream.truth["item_topic"]
    rows = []
    with tempfile.TemporaryDirectory(prefix="streamrec-diversity-") as scratch:
        home = Path(scratch)
        with open_store(home) as store:
            store.catalog.upsert(validate_item(record) for record in stream.items)
            store.log.append([e for n, e in enumerate(events) if n not in held_out])
        started = time.perf_counter()
        config = SASRecConfig(epochs=epochs, seed=seed)
        train_and_register(Home(home, Settings()), config, text_model="all-MiniLM-L6-v2", progress=progress)
        train_seconds = time.perf_counter() - started
        with Runtime.open(home) as runtime:
            max_len = runtime.loaded.model.config.max_len
            cases = [
                (runtime.store.log.recent_items(events[n].user_id, max_len), events[n].item_id)
                for n in sorted(held_out)
            ]
            cases = [(history, target) for history, target in cases if history]
            for diversity in values:
                ndcg, hits, ild, distinct, seconds = [], [], [], [], []
                for history, target in cases:
                    begun = time.perf_counter()
                    answer = runtime.recommend_session(history, K, diversity=diversity)
                    seconds.append(time.perf_counter() - begun)
                    shown = [entry["item_id"] for entry in answer["items"]]
                    rank = shown.index(target) if target in shown else None
                    hits.append(rank is not None)
                    ndcg.append(0.0 if rank is None else 1 / math.log2(rank + 2))
                    ild.append(intra_list_diversity(runtime.item_vectors(runtime.loaded, shown)))
                    distinct.append(len({topics.get(item) for item in shown}))
                rows.append(
                    {
                        "diversity": diversity,
                        "ndcg@10": round(float(np.mean(ndcg)), 4),
                        "hr@10": round(float(np.mean(hits)), 4),
                        "intra_list_diversity": round(float(np.mean(ild)), 4),
                        "distinct_topics@10": round(float(np.mean(distinct)), 3),
                        "ms_per_answer_p50": round(1000 * float(np.median(seconds)), 3),
                    }
                )
                if progress:
                    print(rows[-1])
    result = {
        "benchmark": "diversity",
        "command": command,
        "data": {"users": users, "items": items, "events": len(events), "seed": seed},
        "protocol": "each user's last event held out; the rest trained on; answers through"
        " Runtime.recommend_session (history items excluded); NDCG@10/HR@10 of the held-out item",
        "users_evaluated": len(cases),
        "train_seconds": round(train_seconds, 1),
        "model": config.to_dict(),
        "runs": rows,
        "machine": machine(),
    }
    write_result(out, result)
    _plot(out.with_suffix(".png"), result)
    return result


def _plot(path: Path, result: dict[str, Any]) -> None:
    runs = result["runs"]
    figure, axes = plt.subplots(figsize=(6, 3.8))
    axes.plot([r["intra_list_diversity"] for r in runs], [r["ndcg@10"] for r in runs], "o-", color="#4C72B0")
    for n, run in enumerate(runs):  # labels above and below the line in turn, so neighbours do not overlap
        label = f"λ {run['diversity']:g}: {run['distinct_topics@10']:.1f} topics"
        axes.annotate(label, (run["intra_list_diversity"], run["ndcg@10"]), fontsize=7,
                      xytext=(4, 6 if n % 2 == 0 else -12), textcoords="offset points")  # fmt: skip
    axes.set_xlabel("intra-list diversity (1 - mean cosine of the ten)")
    axes.set_ylabel("NDCG@10 of the held-out item")
    axes.set_title("The diversity knob: accuracy against variety (synthetic stream)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
