"""Writing benchmark results: JSON beside a PNG plot, so both are easy to commit and read."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def machine() -> dict[str, object]:
    """What a result was measured on."""
    import torch

    return {"python": platform.python_version(), "cpus": os.cpu_count(), "torch": torch.__version__}


def write_result(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def save_bar_plot(
    path: Path, values: dict[str, float], *, title: str, ylabel: str, fmt: str = "{:,.0f}"
) -> None:
    figure, axes = plt.subplots(figsize=(max(6, 1.2 * len(values)), 3.5))
    bars = axes.bar(list(values), list(values.values()), color="#4C72B0")
    axes.bar_label(bars, labels=[fmt.format(v) for v in values.values()], fontsize=8)
    axes.set_title(title, fontsize=10)
    axes.set_ylabel(ylabel)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
