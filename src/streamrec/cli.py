"""The ``streamrec`` command line: one sub-command per job, each with ``--help``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from streamrec.config import LR_SCHEDULES

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
            raise ValueError(f"--map: expected FIELD=COLUMN pairs separated by commas, got {pair!r}")
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


def _no_home(home: Path) -> bool:
    """Say so on stderr if ``home`` does not exist (commands that read a home cannot start)."""
    if Path(home).exists():
        return False
    print(f"error: no streamrec home at {home} (run `streamrec ingest` first)", file=sys.stderr)
    return True


def cmd_stats(args: argparse.Namespace) -> int:
    from streamrec.store import open_store

    if _no_home(args.home):
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


def _sasrec_config(args: argparse.Namespace, **overrides: object):
    from streamrec.models.sasrec import SASRecConfig

    return SASRecConfig(
        item_tower=overrides.get("item_tower", getattr(args, "item_tower", "hybrid")),
        hidden=args.hidden,
        layers=args.layers,
        heads=args.heads,
        max_len=args.max_len,
        dropout=args.dropout,
        id_dropout=args.id_dropout,
        lr=args.lr,
        lr_schedule=args.lr_schedule,
        batch_size=args.batch_size,
        epochs=args.epochs,
        patience=args.patience,
        max_minutes=args.max_minutes,
        seed=args.seed,
        device=args.device,
    )


def _model_options(sub: argparse.ArgumentParser) -> None:
    group = sub.add_argument_group("model")
    group.add_argument("--hidden", type=int, default=64, help="embedding width (default 64)")
    group.add_argument("--layers", type=int, default=2, help="transformer blocks (default 2)")
    group.add_argument("--heads", type=int, default=1, help="attention heads (default 1)")
    group.add_argument("--max-len", type=int, default=200, help="most recent items read (default 200)")
    group.add_argument("--dropout", type=float, default=0.1)
    group.add_argument(
        "--id-dropout",
        type=float,
        default=0.0,
        help="hybrid: chance to hide an ID row per step (trains text)",
    )
    group.add_argument("--lr", type=float, default=1e-3)
    group.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="constant")
    group.add_argument("--batch-size", type=int, default=128)
    group.add_argument("--epochs", type=int, default=100, help="at most this many epochs (default 100)")
    group.add_argument("--patience", type=int, default=10, help="early-stopping patience in epochs")
    group.add_argument("--max-minutes", type=float, help="wall-clock budget per model; best epoch kept")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--device", help="cpu, cuda, cuda:1 … (default: CUDA when available)")
    group.add_argument("--text-model", default="all-MiniLM-L6-v2", help="sentence-transformers name or path")


def _update_options(sub: argparse.ArgumentParser, *, full_epochs: int | None) -> None:
    group = sub.add_argument_group("incremental update")
    group.add_argument("--update-epochs", type=int, default=5, help="passes over the new events (default 5)")
    group.add_argument("--update-lr", type=float, default=1e-3)
    group.add_argument(
        "--update-lr-schedule",
        choices=LR_SCHEDULES,
        default="cosine",
        help="cosine (default): an update's rate decays to 0 by its last epoch or its time ceiling",
    )
    group.add_argument(
        "--update-batch-size", type=int, help="user rows per update step (default: --batch-size)"
    )
    group.add_argument(
        "--new-item-lr-scale", type=float, default=1.0, help="new items' ID rows learn this much faster"
    )
    group.add_argument(
        "--replay-share",
        type=float,
        default=1 / 3,
        help="share of past users replayed per update (default 1/3)",
    )
    group.add_argument("--replay-users", type=int, help="replay exactly this many past users instead")
    group.add_argument("--distill-weight", type=float, default=0.5, help="λ of the distillation term")
    group.add_argument("--distill-temperature", type=float, default=1.0)
    group.add_argument("--lora-rank", type=int, default=8)
    group.add_argument(
        "--full-epochs", type=int, default=full_epochs, help="epochs of a full refit (default: --epochs)"
    )


def _update_config(args: argparse.Namespace, strategy: str = "replay"):
    from streamrec.training.update import UpdateConfig

    return UpdateConfig(
        strategy=strategy,
        epochs=args.update_epochs,
        lr=args.update_lr,
        lr_schedule=args.update_lr_schedule,
        batch_size=args.update_batch_size,
        new_item_lr_scale=args.new_item_lr_scale,
        replay_share=args.replay_share,
        replay_users=args.replay_users,
        distill_weight=args.distill_weight,
        distill_temperature=args.distill_temperature,
        lora_rank=args.lora_rank,
        lora_alpha=2 * args.lora_rank,
        full_epochs=args.full_epochs,
        seed=args.seed,
    )


def cmd_train(args: argparse.Namespace) -> int:
    from streamrec.store import open_store
    from streamrec.training.fit import train_and_register

    if _no_home(args.home):
        return 2
    with open_store(args.home) as store:
        try:
            info = train_and_register(
                store,
                Path(args.home),
                _sasrec_config(args),
                text_model=args.text_model,
                progress=not args.quiet,
            )
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    if args.json:
        _print_json(info.to_dict())
    else:
        metrics = ", ".join(f"{k}={v:.4f}" for k, v in info.metrics.items() if k in ("ndcg@10", "hr@10"))
        print(f"{info.version} is live: trained through offset {info.trained_through_offset}, {metrics}")
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from streamrec.serving.runtime import Runtime

    try:
        engine = Runtime.open(args.home)
    except (FileNotFoundError, LookupError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with engine:
        result = engine.recommend(args.user_id, k=args.k, exclude_seen=not args.include_seen)
    if args.json:
        _print_json(result)
    else:
        print(f"user {args.user_id} — from {result['source']}, model version {result['model_version']}:")
        for rank, entry in enumerate(result["items"], start=1):
            print(f"{rank:>3}. {entry['item_id']:<12} {entry['score']:>8.3f}  {entry['title']}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from streamrec.serving.app import serve
    from streamrec.serving.runtime import Runtime

    try:  # fail fast, with a clear message, before uvicorn starts
        Runtime.open(args.home).close()
    except (FileNotFoundError, LookupError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    serve(
        args.home,
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        protect_writes=args.protect_writes,
        access_log=args.access_log,
        torch_threads=args.torch_threads,
        worker=not args.no_worker,
    )
    return 0


def cmd_bench_serve(args: argparse.Namespace) -> int:
    from streamrec.bench.serve import run_serve_benchmark

    try:
        result = run_serve_benchmark(
            args.home,
            duration=args.duration,
            concurrency=args.concurrency,
            out=args.out,
            port=args.port,
            event_batch=args.event_batch,
            seed=args.seed,
            freshness_probes=args.freshness_probes,
            in_place=args.in_place,
            command="streamrec " + " ".join(sys.argv[1:]),
        )
    except (ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    keys = ("recommend", "events", "freshness_ms_p50", "freshness_ms_p95", "client_cpu_note")
    _print_json({key: result.get(key) for key in keys})
    return 0


def _outcome_line(outcome) -> str:
    if outcome.version is None:
        return f"nothing to learn: {outcome.reason}"
    state = "promoted, now live" if outcome.promoted else outcome.version.status
    return f"{outcome.version.version} ({outcome.version.strategy}): {state}; {outcome.reason}"


def cmd_update(args: argparse.Namespace) -> int:
    from streamrec.config import load_settings
    from streamrec.store import open_store
    from streamrec.training.continual import UpdateInProgress, run_update

    if _no_home(args.home):
        return 2
    settings = load_settings(args.home)
    with open_store(args.home, synchronous=settings.synchronous) as store:
        try:
            outcome = run_update(
                store,
                Path(args.home),
                settings,
                strategy=args.strategy,
                promote=not args.no_promote,
                progress=not args.quiet,
            )
        except (LookupError, ValueError, UpdateInProgress) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    if args.json:
        _print_json(
            {
                "version": outcome.version.to_dict() if outcome.version else None,
                "promoted": outcome.promoted,
                "reason": outcome.reason,
            }
        )
    else:
        print(_outcome_line(outcome))
    return 0


def cmd_tune_update(args: argparse.Namespace) -> int:
    from streamrec.config import load_settings
    from streamrec.store import open_store
    from streamrec.training.continual import TUNED_SETTING_KEYS, tune_update_settings

    if _no_home(args.home):
        return 2
    settings = load_settings(args.home)
    with open_store(args.home, synchronous=settings.synchronous) as store:
        try:
            result = tune_update_settings(store, Path(args.home), settings, budget=args.budget)
        except (LookupError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    if args.json:
        _print_json(result.summary())
        return 0
    for candidate in result.candidates:
        shown = ", ".join(f"{key} {value}" for key, value in candidate["settings"].items())
        print(f"NDCG@10 {candidate['ndcg@10_mean']:.4f}  {shown}")
    worker_events = settings.update_every_events
    print(
        f"\nslices of about {result.slice_events:,} events learned per update"
        f" (the worker's: {worker_events:,})"
    )
    if result.budget is not None:
        print(f"epochs sized so an update takes about {result.budget:.0%} of a refit's compute on this log")
    if result.decided:
        shown = ", ".join(f"{key} {value}" for key, value in result.decided.items())
        print(f"won every like-for-like comparison: {shown}")
    print(
        f"\nchosen in {result.seconds:.0f} s: the first{' with those' if result.decided else ''}"
        f" within {result.tolerance:.0%} of the best."
        f" To use it, put in {args.home}/streamrec.toml:"
    )
    for key, value in result.summary()["chosen"].items():
        print(f"{TUNED_SETTING_KEYS[key]} = {value}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    import logging

    from streamrec.config import load_settings
    from streamrec.training.worker import run_worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        outcomes = run_worker(
            Path(args.home), load_settings(args.home), once=args.once, strategy=args.strategy
        )
    except (LookupError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    for outcome in outcomes:
        print(_outcome_line(outcome))
    return 0


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def cmd_models(args: argparse.Namespace) -> int:
    from streamrec.config import load_settings
    from streamrec.registry import Registry
    from streamrec.training.fit import MODELS_DIR

    registry = Registry(Path(args.home) / MODELS_DIR)
    try:
        if args.action == "list":
            versions = registry.versions()
            if args.json:
                _print_json([v.to_dict() for v in versions])
                return 0
            # NDCG@10: a full fit's on each user's last item; an update's on the held-out newest
            # events, beside the live model's on the same events ("vs live").
            header = ("version", "status", "strategy", "parent", "offset", "ndcg@10", "vs live")
            print("{:8} {:9} {:15} {:7} {:>9} {:>8} {:>8}  notes".format(*header))
            for v in versions:
                ndcg, live_ndcg = v.metrics.get("ndcg@10"), v.guardrail.get("live_ndcg@10")
                print(
                    f"{v.version:8} {v.status:9} {v.strategy:15} {v.parent or '-':7}"
                    f" {v.trained_through_offset:>9} {_number(ndcg):>8} {_number(live_ndcg):>8}"
                    f"  {v.notes[:60]}"
                )
        elif args.action == "show":
            _print_json(registry.get(args.version or registry.live() or "").to_dict())
        elif args.action == "promote":
            if not args.version:
                raise ValueError("models promote needs a VERSION")
            print(f"{registry.promote(args.version).version} is live")
        elif args.action == "rollback":
            print(f"rolled back: {registry.rollback().version} is live")
        elif args.action == "prune":
            removed = registry.prune(load_settings(args.home).keep_versions)
            print(f"removed {', '.join(removed) or 'nothing'}")
    except (KeyError, LookupError, ValueError) as error:
        message = error.args[0] if isinstance(error, KeyError) else str(error)
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


def cmd_bench_stream(args: argparse.Namespace) -> int:
    from streamrec.bench.stream import run_stream_benchmark

    try:
        result = run_stream_benchmark(
            dataset=args.dataset,
            data=args.data,
            out=args.out,
            periods=args.periods,
            strategies=tuple(s.strip() for s in args.strategies.split(",") if s.strip()),
            config=_sasrec_config(args),
            update_config=_update_config(args),
            eval_limit=args.eval_limit or None,
            text_model=args.text_model,
            progress=not args.quiet,
            tune=args.tune_update,
            update_budget=args.update_budget,
            command="streamrec " + " ".join(sys.argv[1:]),
        )
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    keys = ("ndcg@10_mean", "hr@10_mean", "cold_hr@10_mean", "update_seconds_median", "forgetting")
    _print_json({name: {k: v.get(k) for k in keys} for name, v in result["strategies"].items()})
    return 0


def cmd_bench_retrieval(args: argparse.Namespace) -> int:
    from streamrec.bench.retrieval import run_retrieval_benchmark

    try:
        run_retrieval_benchmark(
            items=args.items,
            dim=args.dim,
            queries=args.queries,
            k=args.k,
            out=args.out,
            seed=args.seed,
            model_home=args.home,
            expansions=tuple(int(e) for e in args.expansions.split(",")),
            connectivity=args.connectivity,
            eval_users=args.eval_users or None,
            command="streamrec " + " ".join(sys.argv[1:]),
        )
    except (FileNotFoundError, LookupError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(args.out.with_suffix(".md").read_text())
    return 0


def cmd_bench_offline(args: argparse.Namespace) -> int:
    from streamrec.bench.offline import run_offline_benchmark

    try:
        run_offline_benchmark(
            dataset=args.dataset,
            data=args.data,
            out=args.out,
            models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
            config=_sasrec_config(args),
            text_model=args.text_model,
            progress=not args.quiet,
            command="streamrec " + " ".join(sys.argv[1:]),
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(args.out.with_suffix(".md").read_text())
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

    train = command(
        "train", cmd_train, "Fit the model from scratch on the whole log; the new version goes live."
    )
    home_option(train)
    _model_options(train)
    train.add_argument("--item-tower", choices=["hybrid", "id", "text"], default="hybrid")
    train.add_argument("--json", action="store_true")
    train.add_argument("--quiet", action="store_true", help="no progress bars")

    rec = command(
        "recommend", cmd_recommend, "Top-k items for a user from the live model and their latest events."
    )
    rec.add_argument("user_id")
    home_option(rec)
    rec.add_argument("-k", type=int, default=10)
    rec.add_argument("--include-seen", action="store_true", help="also recommend items the user already has")
    rec.add_argument("--json", action="store_true")

    srv = command(
        "serve", cmd_serve, "Serve recommendations, similar items, search and event intake over HTTP."
    )
    home_option(srv)
    srv.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--api-key", help="admin key (prefer the STREAMREC_API_KEY environment variable)")
    srv.add_argument("--protect-writes", action="store_true", help="also require the key for writes")
    srv.add_argument(
        "--access-log", action="store_true", help="log every request (off: /metrics counts them)"
    )
    srv.add_argument("--torch-threads", type=int, default=1, help="intra-op threads per forward pass")
    srv.add_argument(
        "--no-worker", action="store_true", help="do not run the update worker beside the server"
    )

    bench = command("bench", lambda a: 2, "Benchmarks that write JSON results and plots.")
    upd = command("update", cmd_update, "Learn the events since the live version; promote if not worse.")
    home_option(upd)
    upd.add_argument(
        "--strategy",
        choices=["finetune", "replay", "replay-distill", "adapter", "full"],
        help="default: update_strategy from streamrec.toml (replay)",
    )
    upd.add_argument("--no-promote", action="store_true", help="keep a passing candidate as a candidate")
    upd.add_argument("--json", action="store_true")
    upd.add_argument("--quiet", action="store_true")

    tune = command(
        "tune-update",
        cmd_tune_update,
        "Pick the update's lr, batch size and new-item lr scale by a test-then-train run on the log.",
    )
    home_option(tune)
    tune.add_argument(
        "--budget",
        type=float,
        help="share of a refit's compute an update may take (e.g. 0.15); sets update_epochs too",
    )
    tune.add_argument("--json", action="store_true")

    worker = command("worker", cmd_worker, "Keep updating the model as events arrive (Ctrl-C stops).")
    home_option(worker)
    worker.add_argument("--once", action="store_true", help="one update now, then exit")
    worker.add_argument("--strategy", choices=["finetune", "replay", "replay-distill", "adapter", "full"])

    models = command("models", cmd_models, "The model registry: list, show, promote, rollback, prune.")
    home_option(models)
    models.add_argument("action", choices=["list", "show", "promote", "rollback", "prune"])
    models.add_argument("version", nargs="?", help="for show (default: live) and promote")
    models.add_argument("--json", action="store_true")

    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    bench_ingest = benches.add_parser(
        "ingest", help="Append and validate-and-append throughput on synthetic events."
    )
    bench_ingest.set_defaults(handler=cmd_bench_ingest)
    bench_ingest.add_argument("--events", type=int, default=1_000_000)
    bench_ingest.add_argument("--repeats", type=int, default=3)
    bench_ingest.add_argument("--seed", type=int, default=7)
    bench_ingest.add_argument("--out", type=Path, default=Path("results/ingest.json"))
    offline = benches.add_parser("offline", help="Leave-one-out full-ranking benchmark of every model.")
    offline.set_defaults(handler=cmd_bench_offline)
    offline.add_argument(
        "--dataset", required=True, help="ml-1m, ml-1m-ts, ml-100k, beauty, or any name for --data"
    )
    offline.add_argument("--data", type=Path, required=True, help="the dataset folder (or a simulate folder)")
    offline.add_argument(
        "--out", type=Path, required=True, help="result JSON (a .md table and .png beside it)"
    )
    offline.add_argument("--models", default="sasrec-hybrid,sasrec-id,mostpop,recentpop,itemknn")
    offline.add_argument("--quiet", action="store_true")
    _model_options(offline)

    serve_bench = benches.add_parser(
        "serve", help="HTTP throughput, latency and freshness against a live server."
    )
    serve_bench.set_defaults(handler=cmd_bench_serve)
    home_option(serve_bench)
    serve_bench.add_argument("--duration", type=float, default=30.0, help="seconds per phase")
    serve_bench.add_argument("--concurrency", type=int, default=16)
    serve_bench.add_argument("--event-batch", type=int, default=500)
    serve_bench.add_argument("--freshness-probes", type=int, default=50)
    serve_bench.add_argument("--port", type=int, help="default: a free loopback port")
    serve_bench.add_argument("--seed", type=int, default=0)
    serve_bench.add_argument(
        "--in-place", action="store_true", help="run on HOME itself (its log gets the synthetic events)"
    )
    serve_bench.add_argument("--out", type=Path, default=Path("results/serve.json"))

    stream = benches.add_parser(
        "stream", help="Prequential (test-then-train) benchmark of the update strategies."
    )
    stream.set_defaults(handler=cmd_bench_stream)
    stream.add_argument(
        "--dataset", required=True, help="ml-1m-ts, ml-100k, or any name for a simulate --data"
    )
    stream.add_argument("--data", type=Path, required=True, help="the dataset folder (or a simulate folder)")
    stream.add_argument("--periods", type=int, default=10)
    stream.add_argument(
        "--strategies",
        default="static,full,finetune,replay,replay-distill,adapter",
        help="comma-separated; NAME:id / NAME:text picks another item tower (e.g. replay:id)",
    )
    stream.add_argument(
        "--eval-limit",
        type=int,
        default=10_000,
        help="events scored per period, a uniform sample (0: all; default 10000, all of ml-100k's)",
    )
    stream.add_argument(
        "--tune-update",
        action="store_true",
        help="pick --update-lr, --update-batch-size and --new-item-lr-scale by a test-then-train run on"
        " period 0 (overrides them)",
    )
    stream.add_argument(
        "--update-budget",
        type=float,
        help="the share of a refit's compute an update may take, both priced at the initial fit's pace:"
        " each update stops at the step that would pass it; with --tune-update it also sets the"
        " planned epochs (instead of --update-epochs)",
    )
    stream.add_argument("--out", type=Path, required=True, help="result JSON (a .png beside it)")
    stream.add_argument("--quiet", action="store_true")
    _model_options(stream)
    stream.add_argument("--item-tower", choices=["id", "text", "hybrid"], default="hybrid")
    _update_options(stream, full_epochs=None)

    retrieval = benches.add_parser(
        "retrieval", help="ANN recall/latency vs exact, and int8 vs float32 scoring."
    )
    retrieval.set_defaults(handler=cmd_bench_retrieval)
    retrieval.add_argument("--items", type=int, default=200_000)
    retrieval.add_argument("--dim", type=int, default=64)
    retrieval.add_argument("--queries", type=int, default=1000)
    retrieval.add_argument("-k", type=int, default=10)
    retrieval.add_argument("--seed", type=int, default=7)
    retrieval.add_argument("--out", type=Path, default=Path("results/retrieval.json"))
    retrieval.add_argument(
        "--home", type=Path, help="a home with a live model: also compare int8 with float32"
    )
    retrieval.add_argument("--expansions", default="16,32,64,128,256", help="usearch expansion_search values")
    retrieval.add_argument("--connectivity", type=int, default=16)
    retrieval.add_argument("--eval-users", type=int, default=20_000, help="0: all users")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
