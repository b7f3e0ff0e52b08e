"""Getting events in: ``simulate``, ``ingest``, ``stats``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from streamrec.cli.common import CommandError, existing_home, home_option, print_json
from streamrec.home import Home


def parse_mapping(text: str | None) -> dict[str, str] | None:
    """``user_id=uid,item_id=sku`` → ``{"user_id": "uid", "item_id": "sku"}``."""
    if not text:
        return None
    mapping = {}
    for pair in text.split(","):
        field, sep, column = pair.partition("=")
        if not sep or not field.strip() or not column.strip():
            raise CommandError(f"--map: expected FIELD=COLUMN pairs separated by commas, got {pair!r}")
        mapping[field.strip()] = column.strip()
    return mapping


def simulate(args: argparse.Namespace) -> None:
    from streamrec.data.synthetic import simulate
    from streamrec.events import parse_timestamp

    try:
        start = parse_timestamp(args.start)
    except (TypeError, ValueError) as error:
        raise CommandError(f"--start: {error}") from None
    config = simulate(
        args.out,
        users=args.users,
        items=args.items,
        events=args.events,
        seed=args.seed,
        drift_at=tuple(args.drift_at),
        start=start,
    )
    print(f"wrote {args.out}/events.jsonl, items.jsonl and truth.json ({config})", file=sys.stderr)


def ingest(args: argparse.Namespace) -> None:
    from streamrec.data import open_dataset
    from streamrec.ingest import IngestError, ingest_dataset

    options = {"ratings_file": args.ratings_file} if args.ratings_file else {}
    dataset = open_dataset(args.path, args.format, parse_mapping(args.map), **options)
    home = Home.open(args.home)
    rejects = args.rejects or Path(args.home) / "rejects.jsonl"
    with home.open_store() as store:
        try:
            summary = ingest_dataset(
                dataset,
                store,
                home.settings.event_schema(allow_unknown_fields=args.allow_unknown_fields),
                on_error=args.on_error,
                reject_path=rejects,
                batch_size=home.settings.ingest_batch_size,
                progress=not args.quiet,
            )
        except IngestError as error:
            raise CommandError(str(error), code=1) from None
    payload = summary.as_dict()
    if summary.rejected or summary.items_rejected:
        payload["rejects_file"] = str(rejects)
    if args.json:
        print_json(payload)
        return
    print(
        f"{summary.dataset}: {summary.accepted:,} accepted, {summary.rejected:,} rejected,"
        f" {summary.duplicates:,} duplicates, {summary.items:,} items in {summary.seconds:.1f}s"
        f" (offsets {summary.first_offset}..{summary.last_offset})"
    )
    for note in summary.notes:
        print(f"  note: {note}")


def stats(args: argparse.Namespace) -> None:
    from streamrec.sources.consumer import read_statuses

    home = existing_home(args.home)
    with home.open_store() as store:
        counts = store.stats()
    sources = {
        status["source"]: {key: status.get(key) for key in ("lag", "state", "updated_at")}
        for status in read_statuses(home)
    }  # what each stream consumer last wrote (`streamrec consume`)
    if args.json:
        print_json({**counts, "sources": sources} if sources else counts)
        return
    for key, value in counts.items():
        print(f"{key:>26}: {value}")
    for name, status in sources.items():
        lag = "?" if status["lag"] is None else f"{status['lag']:,}"
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(status["updated_at"] or 0))
        print(f"{'source':>26}: {name}: lag {lag} ({status['state']} at {when})")


def add_commands(command) -> None:
    sim = command("simulate", simulate, "Write a deterministic synthetic drifting event stream.")
    sim.add_argument(
        "--out", type=Path, required=True, help="output folder (events.jsonl, items.jsonl, truth.json)"
    )
    sim.add_argument("--users", type=int, default=500)
    sim.add_argument("--items", type=int, default=800)
    sim.add_argument("--events", type=int, default=50_000)
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument(
        "--start",
        default="2024-01-01",
        help="the first event's time: ISO date or epoch seconds (default 2024-01-01)",
    )
    sim.add_argument(
        "--drift-at", type=float, nargs="*", default=[0.5], help="timeline fractions where tastes shift"
    )

    ing = command("ingest", ingest, "Validate events and items from a file or dataset folder into the log.")
    ing.add_argument("path", type=Path, help="a JSONL/CSV/Parquet file or a dataset folder")
    home_option(ing)
    ing.add_argument(
        "--format",
        choices=["jsonl", "csv", "parquet", "movielens", "sasrec", "s3rec"],
        help="default: detected",
    )
    ing.add_argument("--map", help="column mapping for CSV/Parquet/JSONL: user_id=uid,item_id=sku,...")
    ing.add_argument("--ratings-file", help="MovieLens: which ratings file of the folder to read")
    ing.add_argument(
        "--on-error", choices=["fail", "skip"], default="fail", help="fail (default): commit nothing"
    )
    ing.add_argument(
        "--rejects", type=Path, help="reject file for --on-error skip (default HOME/rejects.jsonl)"
    )
    ing.add_argument(
        "--allow-unknown-fields", action="store_true", help="ignore extra columns instead of failing"
    )
    ing.add_argument("--json", action="store_true", help="print the summary as JSON")
    ing.add_argument("--quiet", action="store_true", help="no progress bar")

    counts = command("stats", stats, "Counts of events, users and items in a home.")
    home_option(counts)
    counts.add_argument("--json", action="store_true")
