"""``streamrec bench retrieval``: what approximate retrieval and int8 quantisation cost and buy.

Two independent parts, one JSON (``{"ann": ..., "quantization": ...}``) with a PNG and a
Markdown summary beside it:

* ``ann``: usearch HNSW against the exact product on synthetic clustered item vectors
  (norms spread like a trained table's): recall@k of the approximate top-k against the
  exact one, per-query latency (batch of 1, p50/p99), batched throughput and build time,
  for several ``expansion_search`` values (the knob that needs no rebuild).
* ``quantization`` (only with ``model_home``): the home's live model in float32 against its
  int8 dynamically quantised copy, both on CPU: per-request latency of ``score`` on single
  histories, and NDCG@10 of both on the same leave-one-out inputs. The live model trained on
  everything before each user's last item and picked its epoch by those last items, so the
  absolute NDCG is optimistic as a test figure; the number that matters is the *change*
  from float32 to int8 on identical inputs.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.bench.report import plt, write_result
from streamrec.serving.retrieval import ANNRetriever, ExactRetriever

DEFAULT_EXPANSIONS = (16, 32, 64, 128, 256)
WARMUP = 10


def clustered_vectors(
    items: int, dim: int, queries: int, *, seed: int, spread: float = 0.6, norm_sigma: float = 0.3
) -> tuple[np.ndarray, np.ndarray]:
    """Item vectors around ``~sqrt(items)`` random directions, and queries drawn near them.

    Item norms are log-normal (``norm_sigma``), as a trained table's are (popular items grow
    longer rows); that spread is what makes inner-product search harder than cosine search.
    """
    rng = np.random.default_rng(seed)
    clusters = max(4, int(np.sqrt(items)))
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def around(n: int) -> np.ndarray:
        points = centres[rng.integers(clusters, size=n)]
        points = points + spread * rng.normal(size=(n, dim)).astype(np.float32) / np.sqrt(dim)
        return points / np.linalg.norm(points, axis=1, keepdims=True)

    vectors = around(items) * rng.lognormal(0.0, norm_sigma, size=(items, 1)).astype(np.float32)
    return vectors.astype(np.float32), around(queries).astype(np.float32)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row's exact top-k that the approximate top-k found."""
    k = truth.shape[1]
    hits = [len(np.intersect1d(f[f >= 0], t)) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits) / k) if len(hits) else 0.0


def _percentiles(milliseconds: Sequence[float]) -> dict[str, float]:
    values = np.asarray(milliseconds, dtype=np.float64)
    return {
        "p50_ms": round(float(np.percentile(values, 50)), 4),
        "p99_ms": round(float(np.percentile(values, 99)), 4),
        "mean_ms": round(float(values.mean()), 4),
    }


def _time_each(call: Callable[[int], object], n: int) -> list[float]:
    """Milliseconds of ``call(i)`` for ``i`` in ``range(n)``, after a short warm-up."""
    for i in range(min(WARMUP, n)):
        call(i)
    timings = []
    for i in range(n):
        started = time.perf_counter()
        call(i)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def ann_benchmark(
    *,
    items: int,
    dim: int,
    queries: int,
    k: int,
    seed: int,
    expansions: Sequence[int] = DEFAULT_EXPANSIONS,
    connectivity: int = 16,
    expansion_add: int = 128,
) -> dict[str, Any]:
    """Exact vs HNSW on synthetic clustered vectors (see the module doc)."""
    vectors, query_vectors = clustered_vectors(items, dim, queries, seed=seed)
    exact = ExactRetriever().build(vectors)
    started = time.perf_counter()
    truth, _ = exact.search(query_vectors, k)
    exact_batch_seconds = time.perf_counter() - started
    exact_single = _time_each(lambda i: exact.search(query_vectors[i : i + 1], k), queries)

    ann = ANNRetriever(connectivity=connectivity, expansion_add=expansion_add, expansion_search=expansions[0])
    started = time.perf_counter()
    ann.build(vectors)
    build_seconds = time.perf_counter() - started
    settings = []
    for expansion in expansions:
        ann.expansion_search = expansion
        ann.search(query_vectors[: min(WARMUP, queries)], k)
        started = time.perf_counter()
        found, _ = ann.search(query_vectors, k)
        batch_seconds = time.perf_counter() - started
        single = _time_each(lambda i: ann.search(query_vectors[i : i + 1], k), queries)
        settings.append(
            {
                "expansion_search": expansion,
                f"recall@{k}": round(recall_at_k(found, truth), 4),
                "single_query": _percentiles(single),
                "batch_queries_per_s": round(queries / max(batch_seconds, 1e-9), 1),
            }
        )
        print(f"ann ef={expansion}: recall@{k}={settings[-1][f'recall@{k}']}", flush=True)
    index = ann._index
    return {
        "data": {
            "items": items,
            "dim": dim,
            "queries": queries,
            "k": k,
            "seed": seed,
            "vectors": "clustered (sqrt(items) directions), log-normal norms (sigma 0.3)",
        },
        "exact": {
            "single_query": _percentiles(exact_single),
            "batch_queries_per_s": round(queries / max(exact_batch_seconds, 1e-9), 1),
        },
        "hnsw": {
            "library": "usearch",
            "metric": "ip",
            "dtype": ann.index_dtype,
            "connectivity": connectivity,
            "expansion_add": expansion_add,
            "threads": ann.threads,
            "build_seconds": round(build_seconds, 3),
            "memory_mb": round(index.memory_usage / 2**20, 1),
            "hardware_acceleration": str(index.hardware_acceleration),
            "settings": settings,
        },
    }


def _remapped_split(home: Path, model_items: list[str], n_items: int, through_offset: int) -> Any:
    """The home's leave-one-out split, coded over the model's own vocabulary."""
    from streamrec.evaluation.offline import leave_one_out
    from streamrec.models.base import TrainingData
    from streamrec.store import open_store
    from streamrec.training.fit import prepare

    with open_store(home) as store:
        prepared = prepare(store, through_offset)
    code = {item: c for c, item in enumerate(model_items)}
    mapping = np.array([code.get(item, -1) for item in prepared.items], dtype=np.int64)
    sequences = [mapping[s] for s in prepared.data.sequences]
    sequences = [s[s >= 0] for s in sequences]
    return leave_one_out(TrainingData(sequences, n_items))


def quantization_benchmark(
    home: Path, *, requests: int, seed: int, eval_users: int | None = 20_000
) -> dict[str, Any]:
    """Float32 vs int8 dynamic quantisation of ``home``'s live model (see the module doc)."""
    import torch

    from streamrec.evaluation.offline import evaluate
    from streamrec.home import Home
    from streamrec.models.quantize import quantize_dynamic_int8
    from streamrec.models.sasrec import SASRec, right_pad

    opened = Home.open(home)
    if not opened.has_registry():
        raise FileNotFoundError(f"no model in {home}: run `streamrec train --home {home}` first")
    registry = opened.registry
    version = registry.live()
    if version is None:
        raise LookupError(f"{home} has no live model version")
    info = registry.get(version)
    fp32 = SASRec.load(registry.path(version), device="cpu")
    started = time.perf_counter()
    int8 = quantize_dynamic_int8(fp32)
    quantize_seconds = time.perf_counter() - started
    split = _remapped_split(home, registry.items(version), fp32.n_items, info.trained_through_offset)
    histories, targets = split.test_histories, split.test_targets
    if eval_users is not None and len(targets) > eval_users:
        keep = np.sort(np.random.default_rng(seed).choice(len(targets), eval_users, replace=False))
        histories, targets = [histories[i] for i in keep], targets[keep]
    if not len(targets):
        raise ValueError(f"{home} has no user with 3 or more events to evaluate")

    metrics = {
        name: evaluate(model, histories, targets, ks=(10,), unfiltered=False)
        for name, model in (("fp32", fp32), ("int8", int8))
    }
    shares = []
    for start in range(0, min(len(histories), 2000), 250):  # in chunks: score matrices are [b, n_items]
        chunk = histories[start : start + 250]
        shares.append(_top_overlap(fp32.score(chunk), int8.score(chunk), chunk, 10) * len(chunk))
    overlap = sum(shares) / min(len(histories), 2000)

    # per request: alternate the two models so background load hits both alike
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(histories), min(requests, len(histories)), replace=False)
    requests_histories = [histories[i] for i in picks]
    tables = {}
    with torch.no_grad():
        for name, model in (("fp32", fp32), ("int8", int8)):
            assert model.net is not None
            tables[name] = model.net.item_table()

    @torch.no_grad()
    def runtime_scores(model: SASRec, table: torch.Tensor, history: np.ndarray) -> np.ndarray:
        """The runtime's request path: item table cached, transformer + one product per request."""
        assert model.net is not None
        batch, lengths = right_pad([history], model.config.max_len)
        states = model.net.last_hidden(torch.from_numpy(batch), torch.from_numpy(lengths), table)
        return (states @ table[1:].T)[0].numpy()

    models = {"fp32": fp32, "int8": int8}

    def request(name: str, history: np.ndarray) -> tuple[float, float]:
        """Milliseconds of ``score`` and of the cached-table path for one history."""
        started = time.perf_counter()
        models[name].score([history])
        middle = time.perf_counter()
        runtime_scores(models[name], tables[name], history)
        return (middle - started) * 1000, (time.perf_counter() - middle) * 1000

    for history in requests_histories[:WARMUP]:
        for name in models:
            request(name, history)
    timings: dict[str, dict[str, list[float]]] = {name: {"score": [], "cached_table": []} for name in models}
    for history in requests_histories:
        for name in models:
            score_ms, cached_ms = request(name, history)
            timings[name]["score"].append(score_ms)
            timings[name]["cached_table"].append(cached_ms)

    config = fp32.config
    results = {
        name: {
            "ndcg@10": round(metrics[name]["ndcg@10"], 5),
            "hr@10": round(metrics[name]["hr@10"], 5),
            "score_latency": _percentiles(timings[name]["score"]),
            "cached_table_latency": _percentiles(timings[name]["cached_table"]),
        }
        for name in ("fp32", "int8")
    }
    return {
        "home": str(home),
        "model_version": version,
        "strategy": info.strategy,
        "model": {
            "item_tower": config.item_tower,
            "hidden": config.hidden,
            "layers": config.layers,
            "heads": config.heads,
            "max_len": config.max_len,
            "n_items": fp32.n_items,
        },
        "protocol": (
            "leave-one-out: each user's last item (users with >= 3 events, filtered full ranking); the "
            "live model was trained on the events before it and chose its epoch by it, so absolute "
            "NDCG is optimistic: compare fp32 with int8, on identical inputs"
        ),
        "eval_users": len(targets),
        "latency_requests": len(requests_histories),
        "latency_note": (
            "score: SASRec.score on one history (recomputes the item table); cached_table: the "
            "runtime's path (item table computed once, transformer + one product per request)"
        ),
        "torch_threads": torch.get_num_threads(),
        "quantized_layers": list(int8.quantized_layers),
        "quantize_seconds": round(quantize_seconds, 3),
        "fp32": results["fp32"],
        "int8": results["int8"],
        "ndcg@10_change": round(metrics["int8"]["ndcg@10"] - metrics["fp32"]["ndcg@10"], 5),
        "top10_overlap": round(overlap, 4),
        "score_p50_speedup": round(
            results["fp32"]["score_latency"]["p50_ms"]
            / max(results["int8"]["score_latency"]["p50_ms"], 1e-9),
            3,
        ),
    }


def _top_overlap(a: np.ndarray, b: np.ndarray, histories: Sequence[np.ndarray], k: int) -> float:
    """Mean share of the top-``k`` (history excluded) two score matrices agree on."""
    shares = []
    for row, history in enumerate(histories):
        x, y = a[row].copy(), b[row].copy()
        x[history], y[history] = -np.inf, -np.inf
        take = min(k, len(x))
        top_x = np.argpartition(-x, take - 1)[:take]
        top_y = np.argpartition(-y, take - 1)[:take]
        shares.append(len(np.intersect1d(top_x, top_y)) / take)
    return float(np.mean(shares)) if shares else 0.0


def run_retrieval_benchmark(
    *,
    items: int,
    dim: int,
    queries: int,
    k: int,
    out: Path,
    seed: int,
    model_home: Path | None = None,
    expansions: Sequence[int] = DEFAULT_EXPANSIONS,
    connectivity: int = 16,
    eval_users: int | None = 20_000,
    command: str = "",
) -> dict[str, Any]:
    """Run both parts, write ``out`` (JSON) plus ``.png`` and ``.md`` beside it; returns the result."""
    import torch
    import usearch

    ann = ann_benchmark(
        items=items,
        dim=dim,
        queries=queries,
        k=k,
        seed=seed,
        expansions=expansions,
        connectivity=connectivity,
    )
    quantization = (
        quantization_benchmark(model_home, requests=queries, seed=seed, eval_users=eval_users)
        if model_home is not None
        else None
    )
    result = {
        "benchmark": "retrieval",
        "command": command,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "usearch": usearch.__version__,
        },
        "ann": ann,
        "quantization": quantization,
    }
    write_result(out, result)
    out.with_suffix(".md").write_text(markdown_summary(result))
    save_plot(out.with_suffix(".png"), result)
    return result


def save_plot(path: Path, result: dict[str, Any]) -> None:
    """Recall vs p50 latency per ``expansion_search``; a latency panel for fp32 vs int8 if measured."""
    ann, quantization = result["ann"], result["quantization"]
    k = ann["data"]["k"]
    panels = 2 if quantization else 1
    figure, axes = plt.subplots(1, panels, figsize=(6 * panels, 4), squeeze=False)
    left = axes[0][0]
    points = ann["hnsw"]["settings"]
    xs = [p["single_query"]["p50_ms"] for p in points]
    ys = [p[f"recall@{k}"] for p in points]
    left.plot(xs, ys, marker="o", color="#4C72B0", label="HNSW (usearch, ip)")
    for p, x, y in zip(points, xs, ys, strict=True):
        left.annotate(
            f"ef={p['expansion_search']}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7
        )
    left.scatter([ann["exact"]["single_query"]["p50_ms"]], [1.0], color="#C44E52", marker="s", label="exact")
    left.set_xscale("log")
    left.set_xlabel("p50 latency per query, batch of 1 (ms, log)")
    left.set_ylabel(f"recall@{k} vs exact")
    data = ann["data"]
    left.set_title(f"{data['items']:,} items, d={data['dim']}: recall vs latency", fontsize=10)
    left.legend(fontsize=8)
    if quantization:
        right = axes[0][1]
        labels, values = [], []
        for name in ("fp32", "int8"):
            for kind in ("score_latency", "cached_table_latency"):
                labels.append(f"{name}\n{kind.removesuffix('_latency')}")
                values.append(quantization[name][kind]["p50_ms"])
        bars = right.bar(labels, values, color=["#4C72B0", "#4C72B0", "#DD8452", "#DD8452"])
        right.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=8)
        right.set_ylabel("p50 ms per request")
        change = quantization["ndcg@10_change"]
        right.set_title(f"fp32 vs int8 (NDCG@10 change {change:+.4f})", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def markdown_summary(result: dict[str, Any]) -> str:
    ann = result["ann"]
    k, data = ann["data"]["k"], ann["data"]
    exact = ann["exact"]
    lines = [
        "# Retrieval benchmark",
        "",
        f"Command: `{result['command']}`",
        "",
        f"## Exact vs HNSW: {data['items']:,} items, d={data['dim']}, {data['queries']:,} queries, k={k}",
        "",
        f"HNSW build: {ann['hnsw']['build_seconds']} s, connectivity {ann['hnsw']['connectivity']}, "
        f"{ann['hnsw']['memory_mb']} MB.",
        "",
        f"| method | recall@{k} | p50 ms | p99 ms | batched queries/s |",
        "|---|---|---|---|---|",
        f"| exact | 1.0 | {exact['single_query']['p50_ms']} | {exact['single_query']['p99_ms']} | "
        f"{exact['batch_queries_per_s']} |",
    ]
    for p in ann["hnsw"]["settings"]:
        lines.append(
            f"| HNSW ef={p['expansion_search']} | {p[f'recall@{k}']} | {p['single_query']['p50_ms']} | "
            f"{p['single_query']['p99_ms']} | {p['batch_queries_per_s']} |"
        )
    quantization = result["quantization"]
    if quantization:
        lines += [
            "",
            f"## fp32 vs int8 dynamic quantisation: {quantization['model_version']} "
            f"({quantization['model']['item_tower']}, {quantization['model']['n_items']:,} items)",
            "",
            f"Protocol: {quantization['protocol']}.",
            "",
            f"Quantised layers: {', '.join(quantization['quantized_layers'])}.",
            "",
            "| model | NDCG@10 | HR@10 | score p50 ms | score p99 ms "
            "| cached-table p50 ms | cached-table p99 ms |",
            "|---|---|---|---|---|---|---|",
        ]
        for name in ("fp32", "int8"):
            r = quantization[name]
            lines.append(
                f"| {name} | {r['ndcg@10']} | {r['hr@10']} | {r['score_latency']['p50_ms']} | "
                f"{r['score_latency']['p99_ms']} | {r['cached_table_latency']['p50_ms']} | "
                f"{r['cached_table_latency']['p99_ms']} |"
            )
        lines += [
            "",
            f"NDCG@10 change (int8 - fp32): {quantization['ndcg@10_change']:+.5f}; "
            f"top-10 overlap {quantization['top10_overlap']}.",
        ]
    return "\n".join(lines) + "\n"
