"""How well the pace of the fit on period 0 predicts each later refit, cells counted two ways.

Reads a `streamrec bench stream` result (its recorded pace and the `full` strategy's
refit times), rebuilds the same periods from the dataset, and prints, per refit, the
estimate over the real wall time with cells counted as next-item targets and as the
padded batch positions `training/cost.py` counts. Usage:

    python scripts/refit_estimate.py ml-100k ../shared/datasets results/stream-ml-100k-ceiling.json

(`--max-len 50` for the synthetic stream). Results made before the padded count
recorded their pace per target: pass `--pace-per target` for those.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

from streamrec.bench.stream import load_into_store
from streamrec.evaluation.prequential import cut_into_periods
from streamrec.models.sasrec import SASRecConfig
from streamrec.store import open_store
from streamrec.training.cost import training_cells
from streamrec.training.fit import prepare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("data", type=Path)
    parser.add_argument("result", type=Path)
    parser.add_argument("--max-len", type=int, default=200)
    parser.add_argument("--pace-per", choices=["cell", "target"], default="cell")
    args = parser.parse_args()
    result = json.loads(args.result.read_text())
    model = SASRecConfig(max_len=args.max_len, batch_size=result["sasrec_config"]["batch_size"])
    with tempfile.TemporaryDirectory() as scratch:
        load_into_store(args.dataset, args.data, Path(scratch) / "store")
        with open_store(Path(scratch) / "store") as store:
            split = cut_into_periods(prepare(store).data, result["periods"])
    refits = [u["seconds"] / u["epochs"] for u in result["strategies"]["full"]["updates"]]

    def counts(period: int) -> tuple[int, int]:
        data = replace(split.through(period), learn=None)
        targets = sum(min(len(s) - 1, args.max_len) for s in data.sequences if len(s) >= 2)
        return targets, training_cells(data, model)

    targets_0, cells_0 = counts(0)
    if "refit_pace" in result:  # results since the pace gained a part per step; cells only here
        pace = next(iter(result["refit_pace"].values()))["refit_seconds_per_cell"]
    else:
        pace = next(iter(result["refit_seconds_per_cell"].values()))
    epoch_0 = pace * (targets_0 if args.pace_per == "target" else cells_0)
    rows = []
    for period, real in enumerate(refits, start=1):
        targets, cells = counts(period)
        rows.append(
            {
                "refit": period,
                "seconds_per_epoch": round(real, 4),
                "targets": targets,
                "cells": cells,
                "estimate_over_real_targets": round(epoch_0 / targets_0 * targets / real, 3),
                "estimate_over_real_cells": round(epoch_0 / cells_0 * cells / real, 3),
            }
        )
    period_0 = {"targets": targets_0, "cells": cells_0}
    summary = {"result": str(args.result), "period_0": period_0, "refits": rows}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
