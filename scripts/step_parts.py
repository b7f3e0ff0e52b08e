"""What a training step's parts cost on a real stream, and what pricing targets apart changes.

Fits the model on period 0 of a stream cut into periods (a few epochs: only the
pace matters), times its steps `--repeats` times with `RefitCost.timed`, and for
each update strategy prices its update of period 1 against a refit twice: with a
learned target priced apart from a cell read as context, and as if every cell
were learned (the pricing before the target part). Usage:

    python scripts/step_parts.py ml-1m-ts ../shared/datasets --out results/step-parts-ml-1m-ts.json

(`--max-len 50` for the synthetic stream, DATA a folder written by `streamrec simulate`).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

from streamrec.bench.offline import default_text_cache, load_into_store
from streamrec.evaluation.prequential import cut_into_periods
from streamrec.models.sasrec import SASRec, SASRecConfig
from streamrec.store import open_store
from streamrec.text import EmbeddingCache, TextEncoder
from streamrec.text.encoder import DEFAULT_TEXT_MODEL
from streamrec.training.cost import RefitCost, Rows
from streamrec.training.fit import prepare
from streamrec.training.update import UpdateConfig, training_data

UPDATES = {"finetune": UpdateConfig(strategy="finetune"), "replay a third": UpdateConfig(replay_share=1 / 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("data", type=Path)
    parser.add_argument("--max-len", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        load_into_store(args.dataset, args.data, Path(scratch) / "store")
        with open_store(Path(scratch) / "store") as store:
            prepared = prepare(store)
    split = cut_into_periods(prepared.data, 10)
    encoder = TextEncoder(DEFAULT_TEXT_MODEL, cache=EmbeddingCache(default_text_cache()))
    text = encoder.encode([prepared.texts[i] for i in split.item_order], progress=False)
    config = SASRecConfig(max_len=args.max_len, epochs=args.epochs)
    period_0 = replace(split.through(0), learn=None)
    model = SASRec(config, text[: split.n_items[0]]).fit(period_0, progress=False)
    period_1 = split.through(1)
    timings = []
    for _ in range(args.repeats):
        cost = RefitCost.timed(model, period_0)
        cells_only = RefitCost(cost.seconds_per_cell + cost.seconds_per_target, cost.seconds_per_step)
        refit = cost.seconds(period_1, config, 1)
        refit_cells_only = cells_only.seconds(period_1, config, 1)
        updates = {}
        for name, update in UPDATES.items():
            rows = Rows.of(training_data(period_1, update), args.max_len)
            updates[name] = {
                "learned_share": round(float(rows.learned.sum() / rows.lengths.sum()), 3),
                "priced_vs_cells_only": round(
                    cost.epoch_seconds(rows, config.batch_size)
                    / refit
                    / (cells_only.epoch_seconds(rows, config.batch_size) / refit_cells_only),
                    3,
                ),
            }
        timings.append(
            {
                "target_in_cells": round(cost.seconds_per_target / cost.seconds_per_cell, 3),
                "step_in_cells": round(cost.seconds_per_step / cost.seconds_per_cell, 1),
                "updates_of_period_1": updates,
            }
        )
    summary = {"dataset": args.dataset, "items_in_period_0": int(split.n_items[0]), "timings": timings}
    print(json.dumps(summary, indent=1))
    if args.out is not None:
        args.out.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
