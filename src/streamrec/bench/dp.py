"""``streamrec bench dp``: what differential privacy costs, NDCG@10 against ε on a public dataset.

The same protocol as ``bench offline`` (leave-one-out by time, full ranking, seen items
excluded) and the same fit as ``streamrec train --dp-epsilon``: for each ε the model trains in
its own process; ``inf`` is the ordinary, non-private fit (its epoch picked on validation).
``--clip-only`` adds the private fit's mechanics without its noise (σ = 0: not private), which
splits the cost between clipping and Poisson sampling on one side and noise on the other.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from streamrec.bench.offline import METRICS, PROTOCOL, load_into_store, run_model_alone
from streamrec.bench.report import machine, save_bar_plot, write_result
from streamrec.models.sasrec import SASRecConfig

MODEL = "sasrec-hybrid"


def label(epsilon: float) -> str:
    return "∞ (not private)" if math.isinf(epsilon) else f"ε={epsilon:g}"


def run_dp_benchmark(
    *,
    dataset: str,
    data: Path,
    out: Path,
    epsilons: tuple[float, ...] = (math.inf, 8.0, 3.0, 1.0),
    clip_only: bool = False,
    config: SASRecConfig | None = None,
    text_model: str = "all-MiniLM-L6-v2",
    progress: bool = True,
    command: str = "",
) -> dict[str, Any]:
    if any(not e > 0 for e in epsilons):
        raise ValueError(f"--epsilons: each must be positive (inf: not private), got {epsilons}")
    config = config or SASRecConfig()
    runs: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="streamrec-dp-") as scratch:
        store = Path(scratch) / "store"
        data_info = load_into_store(dataset, data, store)
        plan = [(label(e), None if math.isinf(e) else e) for e in epsilons]
        if clip_only:
            plan.append(("clip only (σ=0)", math.inf))
        for name, epsilon in plan:
            runs[name] = run_model_alone(
                store, MODEL, replace(config, dp_epsilon=epsilon), text_model, progress
            )
            print(f"{name}: " + ", ".join(f"{m}={runs[name][m]:.4f}" for m in METRICS[:2]), flush=True)
    result = {
        "benchmark": "dp",
        "dataset": dataset,
        "protocol": PROTOCOL,
        "model": MODEL,
        "data": data_info,
        "command": command,
        "sasrec_config": config.to_dict(),
        "machine": machine(),
        "runs": runs,
    }
    write_result(out, result)
    save_bar_plot(
        out.with_suffix(".png"),
        {name: run["ndcg@10"] for name, run in runs.items()},
        title=f"NDCG@10 against ε (DP-SGD, per user), {dataset}, leave-one-out, full ranking",
        ylabel="NDCG@10",
        fmt="{:.4f}",
    )
    return result
