"""``streamrec bench offline``: leave-one-out, full ranking, every model side by side.

The dataset goes through the real ingest path into a scratch store, so the
benchmark sees exactly the sequences ``streamrec train`` would. Each model
then trains in its own process, which makes ``peak_rss_mb`` that model's own
peak rather than the benchmark's.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.bench.report import machine, save_bar_plot, write_result
from streamrec.data import BENCHMARK_DATASETS, open_dataset, open_named_dataset
from streamrec.events import EventSchema
from streamrec.ingest import ingest_dataset
from streamrec.models.baselines import BASELINES
from streamrec.models.sasrec import SASRecConfig
from streamrec.store import open_store

METRICS = ("ndcg@10", "hr@10", "ndcg@20", "hr@20", "mrr@10", "coverage@10")
# model name → item tower, "+lora" where the language model learns too (text_tuning="lora")
SASREC_MODELS = {
    "sasrec-hybrid": "hybrid",
    "sasrec-id": "id",
    "sasrec-text": "text",
    "sasrec-hybrid-lora": "hybrid+lora",
    "sasrec-text-lora": "text+lora",
}
# model name → the SASRec model whose top candidates an LM reranker re-scores (models/reranker.py)
RERANKED_MODELS = {"sasrec-hybrid-rerank": "sasrec-hybrid"}
DEFAULT_MODELS = ("sasrec-hybrid", "sasrec-id", "mostpop", "recentpop", "itemknn")
PROTOCOL = (
    "leave-one-out by time (last item test, second-to-last validation), full ranking over all items,"
    " items already in the history excluded (also reported unfiltered); events ordered by (timestamp,"
    " source position)"
)


def default_text_cache() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return root / "streamrec" / "text-cache.sqlite"


@dataclass(frozen=True)
class RerankRun:
    """How a reranked model is measured: its training minutes, and the test users it ranks (the
    cross-encoder costs a language-model pass per candidate; the sample is seeded)."""

    minutes: float = 5.0
    test_users: int = 2000


def _run_model(
    store_path: str, name: str, config: SASRecConfig, text_model: str, progress: bool, rerank: RerankRun
) -> dict:
    """Train and evaluate one model (runs in a child process)."""
    from streamrec.evaluation.offline import evaluate, leave_one_out
    from streamrec.text import EmbeddingCache, TextEncoder
    from streamrec.training.fit import prepare

    with open_store(store_path) as store:
        prepared = prepare(store)
    split = leave_one_out(prepared.data)
    started = time.perf_counter()
    extra: dict[str, Any] = {}
    test_histories, test_targets = split.test_histories, split.test_targets
    if name in SASREC_MODELS or name in RERANKED_MODELS:
        from streamrec.models.sasrec import SASRec

        config = config.with_tower(SASREC_MODELS[RERANKED_MODELS.get(name, name)])
        text = None
        if config.item_tower != "id":
            encoder = TextEncoder(text_model, cache=EmbeddingCache(default_text_cache()))
            text = encoder.encode(prepared.texts, progress=progress)
            del encoder  # its weights would otherwise count in the training's peak memory
            extra["text_encode_seconds"] = round(time.perf_counter() - started, 2)
        model = SASRec(config, text, prepared.texts).fit(
            split.train, valid=(split.valid_histories, split.valid_targets), progress=progress
        )
        log = model.training_log
        extra.update(epochs=log.epochs, best_epoch=log.best_epoch, stopped_by=log.stopped_by)
        extra["valid_ndcg@10"] = round(log.best_valid_ndcg, 4)
        if log.privacy:
            extra["privacy"] = log.privacy
        if log.processes > 1:  # DDP ranks are child processes: their peak is not in peak_rss_mb
            extra["processes"] = log.processes
            extra["rank_peak_rss_mb"] = round(
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1
            )
    else:
        model = BASELINES[name]().fit(split.train)
    if name in RERANKED_MODELS:
        from streamrec.models.reranker import LMReranker, Reranked

        # It learns from the validation targets: events the recommender did not train on.
        reranker = LMReranker(text_model).fit(
            model,
            split.valid_histories,
            split.valid_targets,
            prepared.texts,
            minutes=rerank.minutes,
            progress=progress,
        )
        extra["reranker"] = reranker.report
        sample = np.random.default_rng(0).permutation(len(test_targets))[: rerank.test_users]
        test_histories, test_targets = [test_histories[i] for i in sample], test_targets[sample]
        alone = evaluate(model, test_histories, test_targets, unfiltered=False)
        extra["without_reranker"] = {m: round(alone[m], 5) for m in METRICS}
        model = Reranked(model, reranker, prepared.texts)
    train_seconds = time.perf_counter() - started
    metrics = evaluate(model, test_histories, test_targets)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        **{key: round(value, 5) for key, value in metrics.items() if key != "examples"},
        "train_seconds": round(train_seconds, 1),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "test_users": int(metrics["examples"]),
        **extra,
    }


def run_model_alone(
    store_path: Path,
    name: str,
    config: SASRecConfig,
    text_model: str,
    progress: bool,
    rerank: RerankRun | None = None,
) -> dict[str, Any]:
    """Train and evaluate one model in a fresh process: its peak memory is its own."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(
            _run_model, str(store_path), name, config, text_model, progress, rerank or RerankRun()
        ).result()


def load_into_store(dataset_name: str, data: Path, store_path: Path) -> dict[str, Any]:
    """Ingest a named benchmark dataset (or a ``streamrec simulate`` folder) into a scratch store."""
    if dataset_name in BENCHMARK_DATASETS:
        dataset = open_named_dataset(dataset_name, data)
    else:
        dataset = open_dataset(data)
    with open_store(store_path, synchronous="OFF") as store:
        summary = ingest_dataset(dataset, store, EventSchema(), progress=False)
        stats = store.stats()
    return {
        "reader": dataset.name,
        "events": summary.accepted,
        "users": stats["users"],
        "items": stats["items"],
        "catalog_items": stats["catalog_items"],
        "has_timestamps": dataset.has_timestamps,
    }


def run_offline_benchmark(
    *,
    dataset: str,
    data: Path,
    out: Path,
    models: tuple[str, ...] = DEFAULT_MODELS,
    config: SASRecConfig | None = None,
    text_model: str = "all-MiniLM-L6-v2",
    rerank: RerankRun | None = None,
    progress: bool = True,
    command: str = "",
) -> dict[str, Any]:
    unknown = [
        m for m in models if m not in SASREC_MODELS and m not in RERANKED_MODELS and m not in BASELINES
    ]
    if unknown:
        known = ", ".join([*SASREC_MODELS, *RERANKED_MODELS, *BASELINES])
        raise ValueError(f"--models: unknown model {unknown[0]!r} (known: {known})")
    config = config or SASRecConfig()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="streamrec-offline-") as scratch:
        store_path = Path(scratch) / "store"
        data_info = load_into_store(dataset, data, store_path)
        for name in models:
            results[name] = run_model_alone(store_path, name, config, text_model, progress, rerank)
            print(f"{name}: " + ", ".join(f"{m}={results[name][m]:.4f}" for m in METRICS[:2]), flush=True)
    result = {
        "dataset": dataset,
        "protocol": PROTOCOL,
        "data": data_info,
        "command": command,
        "sasrec_config": config.to_dict(),
        "text_model": text_model,
        "machine": machine(),
        "models": results,
    }
    write_result(out, result)
    out.with_suffix(".md").write_text(markdown_table(result))
    save_bar_plot(
        out.with_suffix(".png"),
        {name: values["ndcg@10"] for name, values in results.items()},
        title=f"NDCG@10, {dataset}, leave-one-out, full ranking",
        ylabel="NDCG@10",
        fmt="{:.4f}",
    )
    return result


def markdown_table(result: dict[str, Any]) -> str:
    columns = [*METRICS, "train_seconds", "peak_rss_mb"]
    lines = [
        f"# Offline benchmark: {result['dataset']}",
        "",
        f"Protocol: {result['protocol']}.",
        "",
        f"Command: `{result['command']}`",
        "",
        "| model | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for name, values in result["models"].items():
        lines.append(f"| {name} | " + " | ".join(str(values.get(c, "")) for c in columns) + " |")
    return "\n".join(lines) + "\n"
