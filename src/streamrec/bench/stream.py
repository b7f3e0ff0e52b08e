"""``streamrec bench stream``: the prequential benchmark of the update strategies, side by side.

The dataset goes through the real ingest path into a scratch store, is cut by
time into periods, and one model is fitted on the first period. Then, for
every later period and every strategy: grow the model to the items that
exist by now, score the period's events (each next item from the user's
history so far, full ranking), then let the strategy learn the period.
``static`` never learns; ``full`` refits from scratch every period. A
strategy may name its item tower, ``replay:id``, to compare towers in one run.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from streamrec.bench.offline import default_text_cache, load_into_store
from streamrec.bench.report import write_result
from streamrec.evaluation.prequential import Examples, StreamSplit, cut_into_periods, score_examples
from streamrec.models.sasrec import SASRec, SASRecConfig
from streamrec.store import open_store
from streamrec.training.cost import RefitCost
from streamrec.training.fit import prepare
from streamrec.training.tuning import tune_update
from streamrec.training.update import STRATEGIES, UpdateConfig, update

DEFAULT_STRATEGIES = ("static", "full", "finetune", "replay", "replay-distill", "adapter")
PROTOCOL = (
    "prequential: periods are time quantiles with equal event counts; period 0 trains the first model;"
    " each later period is scored first (next item from the user's history so far, full ranking over the"
    " items that exist by then, seen items excluded), then learned. Cold: the target item first appeared"
    " in that period (scored on all such events, up to the sample size). Forgetting: NDCG@10 on a fixed"
    " sample of period 1's events right after learning"
    " period 1, minus the same after the last update."
)


def parse_strategy(spec: str, default_tower: str) -> tuple[str, str]:
    """``"replay:id"`` → ``("replay", "id")``; without a tower, ``default_tower``."""
    name, _, tower = spec.partition(":")
    if name != "static" and name not in STRATEGIES:
        known = ", ".join(("static", *STRATEGIES))
        raise ValueError(f"--strategies: unknown strategy {name!r} (known: {known})")
    tower = tower or default_tower
    if tower not in ("id", "text", "hybrid"):
        raise ValueError(f"--strategies: unknown item tower {tower!r} in {spec!r} (known: id, text, hybrid)")
    return name, tower


def run_stream_benchmark(
    *,
    dataset: str,
    data: Path,
    out: Path,
    periods: int = 10,
    strategies: tuple[str, ...] = DEFAULT_STRATEGIES,
    config: SASRecConfig | None = None,
    update_config: UpdateConfig | None = None,
    eval_limit: int | None = 10_000,
    forgetting_sample: int = 1000,
    text_model: str = "all-MiniLM-L6-v2",
    progress: bool = True,
    tune: bool = False,
    update_budget: float | None = None,
    command: str = "",
) -> dict[str, Any]:
    """Run every strategy side by side; ``tune``: pick the update's step settings on period 0 first.

    ``update_budget``: the share of a refit's compute an update may take. Each update
    stops at the step that would pass it, both priced at the initial fit's pace
    (:class:`RefitCost`); with ``tune``, it also sets how many epochs the update plans for.
    """
    if update_budget is not None and not 0 < update_budget <= 1:
        raise ValueError(f"--update-budget: must be in (0, 1] (got {update_budget})")
    config = config or SASRecConfig()
    update_config = update_config or UpdateConfig()
    specs = {spec: parse_strategy(spec, config.item_tower) for spec in strategies}
    with tempfile.TemporaryDirectory(prefix="streamrec-stream-") as scratch:
        data_info = load_into_store(dataset, data, Path(scratch) / "store")
        with open_store(Path(scratch) / "store") as store:
            prepared = prepare(store)
    if not data_info["has_timestamps"]:
        raise ValueError(f"{dataset}: the stream benchmark needs real timestamps; this dataset has none")
    split = cut_into_periods(prepared.data, periods)
    text = None
    if any(tower != "id" for _, tower in specs.values()):
        from streamrec.text import EmbeddingCache, TextEncoder

        encoder = TextEncoder(text_model, cache=EmbeddingCache(default_text_cache()))
        text = encoder.encode([prepared.texts[i] for i in split.item_order], progress=progress)
    rng = np.random.default_rng(update_config.seed)
    examples = {p: split.examples(p, eval_limit, rng) for p in range(1, periods)}
    cold_sets = {p: split.examples(p, eval_limit, rng, cold_only=True) for p in range(1, periods)}
    forgetting_slice = split.examples(1, forgetting_sample, rng)
    _log(
        progress,
        f"{dataset}: {data_info['events']:,} events in {periods} periods; items per period end "
        f"{split.n_items.tolist()}",
    )

    tuning = None
    if tune:  # on period 0 only: the periods that are scored never choose the settings
        tuning = tune_update(
            split.through(0), config, update_config, text_embeddings=text, budget=update_budget
        )
        update_config = tuning.chosen
        _log(progress, f"tuned on period 0 in {tuning.seconds:.0f} s: {tuning.summary()['chosen']}")

    initial: dict[str, tuple[SASRec, float]] = {}
    refit_costs: dict[str, RefitCost] = {}
    for tower in sorted({tower for _, tower in specs.values()}):
        started = time.perf_counter()
        first = replace(config, item_tower=tower, epochs=update_config.refit_epochs(config))
        period_0 = replace(split.through(0), learn=None)
        model = SASRec(first, _text_for(first, text, split.n_items[0])).fit(period_0, progress=False)
        initial[tower] = (model, time.perf_counter() - started)
        refit_costs[tower] = RefitCost.timed(model, period_0)
        _log(progress, f"initial {tower} model on period 0: {initial[tower][1]:.1f} s")

    runs = {
        spec: _StrategyRun(
            name,
            spec,
            initial[tower][0],
            split,
            text,
            update_config,
            None if update_budget is None else (update_budget, refit_costs[tower]),
            progress,
        )
        for spec, (name, tower) in specs.items()
    }
    for period in range(1, periods):  # every strategy learns a period before any learns the next
        evaluation = (examples[period], cold_sets[period], forgetting_slice)
        for run in runs.values():
            run.advance(period, evaluation)
    results = {spec: run.summary() for spec, run in runs.items()}
    full_seconds = {
        t: r["update_seconds_median"]
        for s, r in results.items()
        if specs[s][0] == "full"
        for t in [specs[s][1]]
    }
    for spec, (name, tower) in specs.items():
        reference = full_seconds.get(tower)
        if reference and name not in ("static", "full"):
            results[spec]["cost_vs_full"] = round(results[spec]["update_seconds_median"] / reference, 4)
        full = next((results[s] for s in specs if specs[s] == ("full", tower)), None)
        if full and name != "full":
            results[spec]["ndcg_vs_full"] = round(results[spec]["ndcg@10_mean"] / full["ndcg@10_mean"], 4)
    result = {
        "dataset": dataset,
        "periods": periods,
        "protocol": PROTOCOL,
        "command": command,
        "data": {**data_info, "items_by_period_end": split.n_items.tolist()},
        "examples_per_period": {p: len(e) for p, e in examples.items()},
        "cold_examples_per_period": {p: len(e) for p, e in cold_sets.items()},
        "sasrec_config": config.to_dict(),
        "update_config": update_config.__dict__,
        "update_tuning": tuning.summary() if tuning else None,
        "update_budget": update_budget,
        "refit_pace": {tower: cost.timings() for tower, cost in refit_costs.items()},
        "initial_fit_seconds": {tower: round(s, 2) for tower, (_, s) in initial.items()},
        "text_model": text_model if text is not None else None,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "strategies": results,
    }
    write_result(out, result)
    out.with_suffix(".md").write_text(markdown_table(result))
    save_stream_plots(out, result)
    return result


def markdown_table(result: dict[str, Any]) -> str:
    """The per-strategy summary as a Markdown table (written beside the JSON)."""
    columns = [
        ("NDCG@10", "ndcg@10_mean"),
        ("vs full", "ndcg_vs_full"),
        ("HR@10", "hr@10_mean"),
        ("cold HR@10", "cold_hr@10_mean"),
        ("s / update", "update_seconds_median"),
        ("cost vs full", "cost_vs_full"),
        ("epochs / update", "epochs_median"),
        ("forgetting", "forgetting"),
        ("weights trained", "trainable_fraction_median"),
    ]
    lines = [
        f"# Streaming benchmark: {result['dataset']}, {result['periods']} periods",
        "",
        f"Protocol: {result['protocol']}",
        "",
        f"Command: `{result['command']}`",
        "",
        *_tuning_lines(result.get("update_tuning")),
        *_budget_lines(result.get("update_budget")),
        "| strategy | " + " | ".join(title for title, _ in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    for name, values in result["strategies"].items():
        cells = ["" if values.get(key) is None else str(values[key]) for _, key in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _tuning_lines(tuning: dict[str, Any] | None) -> list[str]:
    if not tuning:
        return []
    chosen = ", ".join(f"{key} {value}" for key, value in tuning["chosen"].items())
    budget = tuning.get("budget")
    within = f", epochs for {budget:.0%} of a refit's time" if budget else ""
    return [f"Update settings tuned on period 0 ({tuning['seconds']:.0f} s{within}): {chosen}", ""]


def _budget_lines(budget: float | None) -> list[str]:
    if budget is None:
        return []
    return [
        f"Each update stops at the step that would take it past {budget:.0%} of a refit's compute,"
        " both estimated at the initial fit's pace (per padded cell and per step).",
        "",
    ]


def _text_for(config: SASRecConfig, text: np.ndarray | None, n_items: int) -> np.ndarray | None:
    return None if config.item_tower == "id" or text is None else text[:n_items]


class _StrategyRun:
    """One strategy's way through the stream, advanced a period at a time beside the others.

    Every strategy scores and learns period ``p`` before any learns ``p + 1``, so an
    update's wall time is measured minutes from the refit it is compared with, not
    an hour apart on a machine whose speed drifts.
    """

    def __init__(
        self,
        name: str,
        label: str,
        model: SASRec,
        split: StreamSplit,
        text: np.ndarray | None,
        update_config: UpdateConfig,
        budget: tuple[float, RefitCost] | None,
        progress: bool,
    ) -> None:
        """``budget``: (share, refit pace) caps each update at that share of a refit's estimated compute."""
        self.name, self.label, self.model = name, label, model
        self.split, self.text, self.progress = split, text, progress
        self.step = update_config if name == "static" else replace(update_config, strategy=name)
        self.cost = None
        if budget is not None and name not in ("static", "full"):
            share, self.cost = budget
            self.step = replace(self.step, budget=share)
        self.per_period: list[dict[str, float]] = []
        self.updates: list[dict[str, Any]] = []
        self.forgetting_curve: list[float] = []

    def advance(self, period: int, evaluation: tuple[Examples, Examples, Examples]) -> None:
        """Score ``period`` (a uniform sample; all its cold events, capped), then learn it."""
        scored_set, cold_set, forgetting_slice = evaluation
        split, text = self.split, self.text
        if split.n_items[period] > self.model.n_items:
            self.model = self.model.grow(int(split.n_items[period]), text)
        scored = score_examples(self.model, scored_set)
        cold = score_examples(self.model, cold_set)  # every target cold: its cold_* are its totals
        self.per_period.append(
            scored | {key: cold[key] for key in ("cold_examples", "cold_hr@10", "cold_ndcg@10")}
        )
        if self.name == "static" or period == split.n_periods - 1:
            return  # static never learns; learning the last period would never be scored
        result = update(self.model, split.through(period), self.step, text_embeddings=text, cost=self.cost)
        self.model = result.model
        self.updates.append(result.summary())
        self.forgetting_curve.append(score_examples(self.model, forgetting_slice)["ndcg@10"])
        _log(
            self.progress,
            f"{self.label} period {period}: ndcg@10 {self.per_period[-1]['ndcg@10']:.4f}, "
            f"update {result.seconds:.1f} s",
        )

    def summary(self) -> dict[str, Any]:
        per_period, updates, curve = self.per_period, self.updates, self.forgetting_curve
        seconds = [u["seconds"] for u in updates]
        ndcg = [p["ndcg@10"] for p in per_period]
        cold = [p["cold_hr@10"] for p in per_period if p["cold_examples"]]
        summary = {
            "ndcg@10_mean": round(float(np.mean(ndcg)), 5),
            "hr@10_mean": round(float(np.mean([p["hr@10"] for p in per_period])), 5),
            "ndcg@10_per_period": [round(v, 5) for v in ndcg],
            "hr@10_per_period": [round(p["hr@10"], 5) for p in per_period],
            "cold_hr@10_mean": round(float(np.mean(cold)), 5) if cold else None,
            "cold_ndcg@10_mean": _mean_or_none([p["cold_ndcg@10"] for p in per_period if p["cold_examples"]]),
            "cold_hr@10_per_period": [
                None if not p["cold_examples"] else round(p["cold_hr@10"], 5) for p in per_period
            ],
            "update_seconds_median": round(statistics.median(seconds), 3) if seconds else 0.0,
            "update_seconds": [round(s, 3) for s in seconds],
            "forgetting": round(curve[0] - curve[-1], 5) if curve else None,
            "forgetting_ndcg@10_curve": [round(v, 5) for v in curve],
        }
        if updates:
            for key in ("changed_fraction", "trainable_fraction", "epochs"):
                summary[f"{key}_median"] = round(statistics.median(u[key] for u in updates), 5)
            summary["updates"] = updates
        return summary


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
