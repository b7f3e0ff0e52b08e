"""``streamrec bench stream``: the shipped update, measured test-then-train on a real stream.

Load → run → report. The dataset goes through the real ingest path into a
scratch store and is cut by time into periods. Every SASRec strategy is a
:class:`~streamrec.training.continual.GuardedLearner`: it fits on period 0 the
way ``streamrec train`` does, and learns each later period through the same
guarded update ``streamrec update`` runs (held-out newest slice, guardrail,
drift → refit), with the product's default update settings unless flags say
otherwise. ``full`` is the product's refit behind the same guardrail; ``static``
never learns; the baselines learn with their own ``partial_fit``.
:func:`~streamrec.evaluation.prequential.run_prequential` scores every learner on
each period before it learns it.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.bench.offline import default_text_cache, load_into_store
from streamrec.bench.report import write_result
from streamrec.config import STRATEGIES, UpdateSettings
from streamrec.evaluation.prequential import Frozen, StreamSplit, cut_into_periods, run_prequential
from streamrec.models.base import Recommender
from streamrec.models.baselines import BASELINES
from streamrec.models.sasrec import SASRecConfig
from streamrec.store import open_store
from streamrec.training.continual import GuardedLearner
from streamrec.training.fit import prepare
from streamrec.training.guard import replace_strategy

DEFAULT_STRATEGIES = (
    "static",
    "full",
    "finetune",
    "replay",
    "replay-distill",
    "adapter",
    "mostpop",
    "itemknn",
)
TOWERS = ("id", "text", "hybrid")
PROTOCOL = (
    "prequential: periods are time quantiles with equal event counts; period 0 trains the first model"
    " (the product's fit); each later period is scored first (next item from the user's history so far,"
    " full ranking over the items that exist by then, seen items excluded), then learned through the"
    " product's guarded update (the newest events held out, the candidate promoted only if not worse"
    " than the live model on them, drift → refit). Cold: the target item first appeared in that period"
    " (scored on all such events, up to the sample size). Forgetting: NDCG@10 on a fixed sample of"
    " period 1's events right after learning period 1, minus the same after the last update. Seconds:"
    " wall time of each learning step (a guarded update includes scoring its holdout twice)."
)


def parse_strategy(spec: str, default_tower: str) -> tuple[str, str]:
    """``"replay:id"`` → ``("replay", "id")``; without a tower, ``default_tower``.

    A tower may end in ``+lora`` (``"replay:hybrid+lora"``): its language model learns too.
    """
    name, _, tower = spec.partition(":")
    known = ("static", *STRATEGIES, *BASELINES)
    if name not in known:
        raise ValueError(f"--strategies: unknown strategy {name!r} (known: {', '.join(known)})")
    tower = tower or default_tower
    base, plus, tuning = tower.partition("+")
    if base not in TOWERS or (plus and (tuning != "lora" or base == "id")):
        raise ValueError(
            f"--strategies: unknown item tower {tower!r} in {spec!r} (known: {', '.join(TOWERS)},"
            " text+lora, hybrid+lora)"
        )
    return name, tower


def run_stream_benchmark(
    *,
    dataset: str,
    data: Path,
    out: Path,
    periods: int = 10,
    strategies: tuple[str, ...] = DEFAULT_STRATEGIES,
    config: SASRecConfig | None = None,
    update: UpdateSettings | None = None,
    eval_limit: int | None = 10_000,
    forgetting_sample: int = 1000,
    text_model: str = "all-MiniLM-L6-v2",
    progress: bool = True,
    command: str = "",
) -> dict[str, Any]:
    """Run every strategy side by side on ``dataset``; ``update``: the product's defaults unless given."""
    config = config or SASRecConfig()
    update = update or UpdateSettings()
    specs = {spec: parse_strategy(spec, config.item_tower) for spec in strategies}
    split, data_info, text, texts = _load(dataset, data, periods, specs, text_model, progress)
    rng = np.random.default_rng(update.seed)
    forgetting_slice = split.examples(1, forgetting_sample, rng)

    def examples(period: int) -> dict[str, Any]:
        return {
            "all": split.examples(period, eval_limit, rng),
            "cold": split.examples(period, eval_limit, rng, cold_only=True),
        }

    learners = {
        spec: _learner(name, tower, config, update, text, texts) for spec, (name, tower) in specs.items()
    }

    def report(name: str, period: int, record: dict[str, Any]) -> None:
        seconds = record.get("learn_seconds")
        learned = "" if seconds is None else f", learned in {seconds:.1f} s"
        _log(progress, f"{name} period {period}: ndcg@10 {record['all']['ndcg@10']:.4f}{learned}")

    records = run_prequential(split, learners, examples, probe=forgetting_slice, on_period=report)
    results = {spec: _summary(records[spec], learners[spec]) for spec in specs}
    _compare_with_full(results, specs)
    result = {
        "dataset": dataset,
        "periods": periods,
        "protocol": PROTOCOL,
        "command": command,
        "data": {**data_info, "items_by_period_end": split.n_items.tolist()},
        "sasrec_config": config.to_dict(),
        "update_settings": update.model_dump(),
        "text_model": text_model if text is not None else None,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "strategies": results,
    }
    write_result(out, result)
    out.with_suffix(".md").write_text(markdown_table(result))
    save_stream_plots(out, result)
    return result


def _load(
    dataset: str, data: Path, periods: int, specs: dict[str, tuple[str, str]], text_model: str, progress: bool
) -> tuple[StreamSplit, dict[str, Any], np.ndarray | None, list[str]]:
    """The dataset through the ingest path, cut into periods, its items' text embeddings if needed,
    and their texts (rows: the split's item codes)."""
    with tempfile.TemporaryDirectory(prefix="streamrec-stream-") as scratch:
        data_info = load_into_store(dataset, data, Path(scratch) / "store")
        with open_store(Path(scratch) / "store") as store:
            prepared = prepare(store)
    if not data_info["has_timestamps"]:
        raise ValueError(f"{dataset}: the stream benchmark needs real timestamps; this dataset has none")
    split = cut_into_periods(prepared.data, periods)
    text = None
    texts = [prepared.texts[i] for i in split.item_order]
    if any(name not in BASELINES and tower != "id" for name, tower in specs.values()):
        from streamrec.text import EmbeddingCache, TextEncoder

        text = TextEncoder(text_model, cache=EmbeddingCache(default_text_cache())).encode(
            texts, progress=progress
        )
    _log(
        progress,
        f"{dataset}: {data_info['events']:,} events in {periods} periods; items per period end "
        f"{split.n_items.tolist()}",
    )
    return split, data_info, text, texts


def _learner(
    name: str,
    tower: str,
    config: SASRecConfig,
    update: UpdateSettings,
    text: np.ndarray | None,
    texts: list[str],
) -> Recommender:
    if name in BASELINES:
        return BASELINES[name]()
    towered = config.with_tower(tower)
    strategy = replace_strategy(update, "replay" if name == "static" else name)
    learner = GuardedLearner(towered, strategy, text, texts)
    return Frozen(learner) if name == "static" else learner


def _summary(records: list[dict[str, Any]], learner: Recommender) -> dict[str, Any]:
    """One strategy's row: accuracy per period and on average, cost per update, guardrail verdicts."""
    ndcg = [r["all"]["ndcg@10"] for r in records]
    cold = [r["cold"] for r in records]
    seconds = [r["learn_seconds"] for r in records if "learn_seconds" in r]
    curve = [r["probe_ndcg@10"] for r in records if "probe_ndcg@10" in r]
    summary: dict[str, Any] = {
        "ndcg@10_mean": round(float(np.mean(ndcg)), 5),
        "hr@10_mean": round(float(np.mean([r["all"]["hr@10"] for r in records])), 5),
        "ndcg@10_per_period": [round(v, 5) for v in ndcg],
        "hr@10_per_period": [round(r["all"]["hr@10"], 5) for r in records],
        "cold_hr@10_mean": _mean_or_none([c["cold_hr@10"] for c in cold if c["cold_examples"]]),
        "cold_ndcg@10_mean": _mean_or_none([c["cold_ndcg@10"] for c in cold if c["cold_examples"]]),
        "cold_hr@10_per_period": [round(c["cold_hr@10"], 5) if c["cold_examples"] else None for c in cold],
        "update_seconds_median": round(statistics.median(seconds), 3) if seconds else 0.0,
        "update_seconds": [round(s, 3) for s in seconds],
        "forgetting": round(curve[0] - curve[-1], 5) if curve else None,
        "forgetting_ndcg@10_curve": [round(v, 5) for v in curve],
    }
    if isinstance(learner, GuardedLearner):
        verdicts = learner.verdicts
        summary["promoted"] = sum(v["promoted"] for v in verdicts)
        summary["rejected"] = sum(not v["promoted"] for v in verdicts)
        summary["drift_refits"] = sum(v["drift"] for v in verdicts)
        summary["first_fit"] = learner.fit_record
        summary["verdicts"] = verdicts
    return summary


def _compare_with_full(results: dict[str, dict[str, Any]], specs: dict[str, tuple[str, str]]) -> None:
    """Each row's accuracy and cost as a share of ``full``'s with the same item tower, where there is one."""
    for spec, (name, tower) in specs.items():
        full = next((results[s] for s, (n, t) in specs.items() if n == "full" and t == tower), None)
        if full is None or name == "full":
            continue
        row = results[spec]
        if full["ndcg@10_mean"]:
            row["ndcg_vs_full"] = round(row["ndcg@10_mean"] / full["ndcg@10_mean"], 4)
        if name != "static" and full["update_seconds_median"]:
            row["cost_vs_full"] = round(row["update_seconds_median"] / full["update_seconds_median"], 4)


def markdown_table(result: dict[str, Any]) -> str:
    """The per-strategy summary as a Markdown table (written beside the JSON)."""
    columns = [
        ("NDCG@10", "ndcg@10_mean"),
        ("vs full", "ndcg_vs_full"),
        ("HR@10", "hr@10_mean"),
        ("cold HR@10", "cold_hr@10_mean"),
        ("s / update", "update_seconds_median"),
        ("cost vs full", "cost_vs_full"),
        ("promoted", "promoted"),
        ("rejected", "rejected"),
        ("forgetting", "forgetting"),
    ]
    lines = [
        f"# Streaming benchmark: {result['dataset']}, {result['periods']} periods",
        "",
        f"Protocol: {result['protocol']}",
        "",
        f"Command: `{result['command']}`",
        "",
        "| strategy | " + " | ".join(title for title, _ in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for name, values in result["strategies"].items():
        cells = ["" if values.get(key) is None else str(values[key]) for _, key in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _mean_or_none(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 5) if values else None


def _log(progress: bool, message: str) -> None:
    if progress:
        print(message, flush=True)


def save_stream_plots(out: Path, result: dict[str, Any]) -> None:
    """``<out>.png``: NDCG@10 per period by strategy, and median seconds per update by strategy."""
    import matplotlib.pyplot as plt

    strategies = result["strategies"]
    figure, (accuracy, cost) = plt.subplots(1, 2, figsize=(12, 4))
    for name, values in strategies.items():
        periods = range(1, len(values["ndcg@10_per_period"]) + 1)
        accuracy.plot(periods, values["ndcg@10_per_period"], marker="o", markersize=3, label=name)
    accuracy.set_xlabel("period (scored before it is learned)")
    accuracy.set_ylabel("NDCG@10")
    accuracy.set_title(f"{result['dataset']}: accuracy per period", fontsize=10)
    accuracy.legend(fontsize=8)
    learners = {name: v["update_seconds_median"] for name, v in strategies.items() if v["update_seconds"]}
    bars = cost.bar(list(learners), list(learners.values()), color="#4C72B0")
    cost.bar_label(bars, labels=[f"{v:.1f}" for v in learners.values()], fontsize=8)
    cost.set_ylabel("seconds per update (median)")
    cost.set_title(f"{result['dataset']}: compute per update", fontsize=10)
    cost.tick_params(axis="x", labelrotation=30, labelsize=8)
    figure.tight_layout()
    figure.savefig(out.with_suffix(".png"), dpi=110)
    plt.close(figure)
