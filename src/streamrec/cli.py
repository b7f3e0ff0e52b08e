"""The ``streamrec`` command line: one sub-command per job, each with ``--help``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

DEFAULT_HOME = Path("./recs")


def _print_json(payload: object) -> None:
    print(json.dumps(payload, indent=2, default=str))


def _parse_mapping(text: str | None) -> dict[str, str] | None:
    """``user_id=uid,item_id=sku`` → ``{"user_id": "uid", "item_id": "sku"}``."""
    if not text:
        return None
    mapping = {}
    for pair in text.split(","):
        field, sep, column = pair.partition("=")
        if not sep or not field.strip() or not column.strip():
            raise SystemExit(f"--map: expected FIELD=COLUMN pairs separated by commas, got {pair!r}")
        mapping[field.strip()] = column.strip()
    return mapping


def cmd_simulate(args: argparse.Namespace) -> int:
    from streamrec.data.synthetic import simulate

    config = simulate(
        args.out,
        users=args.users,
        items=args.items,
        events=args.events,
        seed=args.seed,
        drift_at=tuple(args.drift_at),
    )
    print(f"wrote {args.out}/events.jsonl, items.jsonl and truth.json ({config})", file=sys.stderr)
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from streamrec.config import load_settings
    from streamrec.data import open_dataset
    from streamrec.ingest import IngestError, ingest_dataset
    from streamrec.store import open_store

    options = {"ratings_file": args.ratings_file} if args.ratings_file else {}
    try:
        dataset = open_dataset(args.path, args.format, _parse_mapping(args.map), **options)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    settings = load_settings(args.home)
    rejects = args.rejects or Path(args.home) / "rejects.jsonl"
    with open_store(args.home, synchronous=settings.synchronous) as store:
        try:
            summary = ingest_dataset(
                dataset,
                store,
                settings.event_schema(allow_unknown_fields=args.allow_unknown_fields),
                on_error=args.on_error,
                reject_path=rejects,
                batch_size=settings.ingest_batch_size,
                progress=not args.quiet,
            )
        except IngestError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    payload = summary.as_dict()
    if summary.rejected or summary.items_rejected:
        payload["rejects_file"] = str(rejects)
    if args.json:
        _print_json(payload)
    else:
        print(
            f"{summary.dataset}: {summary.accepted:,} accepted, {summary.rejected:,} rejected,"
            f" {summary.duplicates:,} duplicates, {summary.items:,} items in {summary.seconds:.1f}s"
            f" (offsets {summary.first_offset}..{summary.last_offset})"
        )
        for note in summary.notes:
            print(f"  note: {note}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from streamrec.store import open_store

    if not Path(args.home).exists():
        print(f"error: no streamrec home at {args.home} (run `streamrec ingest` first)", file=sys.stderr)
        return 2
    with open_store(args.home) as store:
        stats = store.stats()
    if args.json:
        _print_json(stats)
    else:
        for key, value in stats.items():
            print(f"{key:>26}: {value}")
    return 0


def cmd_bench_ingest(args: argparse.Namespace) -> int:
    from streamrec.bench.ingest import run_ingest_benchmark

    result = run_ingest_benchmark(events=args.events, repeats=args.repeats, out=args.out, seed=args.seed)
    _print_json(result["summary"])
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamrec",
        description="A recommender whose deep model keeps learning from a live event stream.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, handler: Callable[[argparse.Namespace], int], help_text: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    def home_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--home", type=Path, default=DEFAULT_HOME, help="streamrec home directory (default ./recs)"
        )

    sim = command("simulate", cmd_simulate, "Write a deterministic synthetic drifting event stream.")
    sim.add_argument(
        "--out", type=Path, required=True, help="output folder (events.jsonl, items.jsonl, truth.json)"
    )
    sim.add_argument("--users", type=int, default=500)
    sim.add_argument("--items", type=int, default=800)
    sim.add_argument("--events", type=int, default=50_000)
    sim.add_argument("--seed", type=int, default=7)
    sim.add_argument(
        "--drift-at", type=float, nargs="*", default=[0.5], help="timeline fractions where tastes shift"
    )

    ing = command(
        "ingest", cmd_ingest, "Validate events and items from a file or dataset folder into the log."
    )
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

    stats = command("stats", cmd_stats, "Counts of events, users and items in a home.")
    home_option(stats)
    stats.add_argument("--json", action="store_true")

    bench = command("bench", lambda a: 2, "Benchmarks that write JSON results and plots.")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    bench_ingest = benches.add_parser(
        "ingest", help="Append and validate-and-append throughput on synthetic events."
    )
    bench_ingest.set_defaults(handler=cmd_bench_ingest)
    bench_ingest.add_argument("--events", type=int, default=1_000_000)
    bench_ingest.add_argument("--repeats", type=int, default=3)
    bench_ingest.add_argument("--seed", type=int, default=7)
    bench_ingest.add_argument("--out", type=Path, default=Path("results/ingest.json"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
