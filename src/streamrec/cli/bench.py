"""``bench …``: benchmarks that write JSON results, Markdown tables and plots."""

from __future__ import annotations

import argparse
from pathlib import Path

from streamrec.cli.common import (
    CommandError,
    home_option,
    model_config,
    model_options,
    print_json,
    the_command,
)


def numbers(text: str, option: str, kind: type = float) -> tuple:
    """``1,3,10`` as numbers; a clear error naming ``option`` otherwise."""
    try:
        return tuple(kind(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"{option}: expected numbers separated by commas, not {text!r}") from None


def ingest(args: argparse.Namespace) -> None:
    from streamrec.bench.ingest import run_ingest_benchmark

    result = run_ingest_benchmark(
        events=args.events, repeats=args.repeats, out=args.out, seed=args.seed, store=args.store
    )
    if "postgresql" in result:
        print_json({"sqlite": result["summary"], "postgresql": result["postgresql"]["summary"]})
    else:
        print_json(result["summary"])


def offline(args: argparse.Namespace) -> None:
    from streamrec.bench.offline import RerankRun, run_offline_benchmark

    run_offline_benchmark(
        dataset=args.dataset,
        data=args.data,
        out=args.out,
        models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
        config=model_config(args),
        text_model=args.text_model,
        rerank=RerankRun(args.rerank_minutes, args.rerank_test_users),
        progress=not args.quiet,
        command=the_command(),
    )
    print(args.out.with_suffix(".md").read_text())


def dp(args: argparse.Namespace) -> None:
    from streamrec.bench.dp import run_dp_benchmark

    if args.dp_epsilon is not None:
        raise CommandError("--dp-epsilon: bench dp takes each fit's ε from --epsilons")
    result = run_dp_benchmark(
        dataset=args.dataset,
        data=args.data,
        out=args.out,
        epsilons=numbers(args.epsilons, "--epsilons"),
        clip_only=args.clip_only,
        config=model_config(args),
        text_model=args.text_model,
        progress=not args.quiet,
        command=the_command(),
    )
    keys = ("ndcg@10", "hr@10", "train_seconds")
    print_json(
        {name: {k: run[k] for k in keys} | run.get("privacy", {}) for name, run in result["runs"].items()}
    )


def serve(args: argparse.Namespace) -> None:
    from streamrec.bench.serve import run_serve_benchmark

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
        workers=args.workers,
        load_generator=args.load_generator,
        promote_during=args.promote_during,
        profile=args.profile,
        command=the_command(),
    )
    keys = ("load_generator", "workers", "mixed", "fresh", "events", "freshness_ms_p50", "promotion")
    keys += ("cpu_note", "load_generator_note")
    print_json({key: result.get(key) for key in keys})


def stream(args: argparse.Namespace) -> None:
    from streamrec.bench.stream import run_stream_benchmark
    from streamrec.cli.common import update_settings
    from streamrec.config import UpdateSettings

    result = run_stream_benchmark(
        dataset=args.dataset,
        data=args.data,
        out=args.out,
        periods=args.periods,
        strategies=tuple(s.strip() for s in args.strategies.split(",") if s.strip()),
        config=model_config(args),
        update=update_settings(args, UpdateSettings()),
        eval_limit=args.eval_limit or None,
        text_model=args.text_model,
        progress=not args.quiet,
        command=the_command(),
    )
    keys = ("ndcg@10_mean", "ndcg_vs_full", "cold_hr@10_mean", "update_seconds_median", "cost_vs_full")
    print_json({name: {k: v.get(k) for k in keys} for name, v in result["strategies"].items()})


def retrieval(args: argparse.Namespace) -> None:
    from streamrec.bench.retrieval import run_retrieval_benchmark

    run_retrieval_benchmark(
        items=args.items,
        dim=args.dim,
        queries=args.queries,
        k=args.k,
        out=args.out,
        seed=args.seed,
        model_home=args.home,
        expansions=numbers(args.expansions, "--expansions", int),
        connectivity=args.connectivity,
        eval_users=args.eval_users or None,
        command=the_command(),
    )
    print(args.out.with_suffix(".md").read_text())


def catalogue(args: argparse.Namespace) -> None:
    from streamrec.bench.catalogue import run_catalogue_benchmark

    result = run_catalogue_benchmark(
        items=args.items,
        users=args.users,
        events=args.events,
        epochs=args.epochs,
        negatives=args.negatives,
        requests=args.requests,
        expansions=numbers(args.expansions, "--expansions", int),
        out=args.out,
        seed=args.seed,
        work_dir=args.work_dir,
        progress=not args.quiet,
        command=the_command(),
    )
    print_json({key: result[key] for key in ("ingest", "train", "serve")})


def multitask(args: argparse.Namespace) -> None:
    from streamrec.bench.multitask import run_multitask_benchmark

    result = run_multitask_benchmark(
        out=args.out,
        boosted=args.boost,
        weights=numbers(args.weights, "--weights"),
        users=args.users,
        items=args.items,
        events_per_user=args.events_per_user,
        epochs=args.epochs,
        seed=args.seed,
        progress=not args.quiet,
        command=the_command(),
    )
    hit_rates = {
        f"{args.boost} x {run['weight']:g}": {name: f["hr@10"] for name, f in run["by_target_type"].items()}
        for run in result["runs"]
    }
    print_json(hit_rates)


def diversity(args: argparse.Namespace) -> None:
    from streamrec.bench.diversity import run_diversity_benchmark

    result = run_diversity_benchmark(
        out=args.out,
        values=numbers(args.values, "--values"),
        users=args.users,
        items=args.items,
        events_per_user=args.events_per_user,
        epochs=args.epochs,
        seed=args.seed,
        progress=not args.quiet,
        command=the_command(),
    )
    print_json(result["runs"])


def unlearn(args: argparse.Namespace) -> None:
    from streamrec.bench.unlearn import run_unlearn_benchmark

    result = run_unlearn_benchmark(
        out=args.out,
        canaries=args.canaries,
        repeats=args.repeats,
        users=args.users,
        items=args.items,
        events_per_user=args.events_per_user,
        epochs=args.epochs,
        seed=args.seed,
        progress=not args.quiet,
        command=the_command(),
    )
    keys = ("before", "after", "never", "after_within_never_range", "forget_seconds_max", "unlearn_seconds")
    print_json({key: result[key] for key in keys})


def ab(args: argparse.Namespace) -> None:
    import tempfile

    from streamrec.bench.ab import run_ab_benchmark

    if args.work_dir is not None:
        args.work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="streamrec-ab-", dir=args.work_dir) as scratch:
        result = run_ab_benchmark(
            out=args.out,
            work_dir=Path(scratch),
            runs=args.runs,
            users=args.users,
            ab_visits=args.ab_visits,
            interleave_visits=args.interleave_visits,
            look=args.look,
            seed=args.seed,
            stream_users=args.stream_users,
            progress=not args.quiet,
        )
    print_json(
        {
            "aa_false_positive_rate": result["aa"]["false_positive_rate"],
            "drift_users_until_p_below_0.01": result["drift"]["users_until_p_below_0.01"],
            "broken_stopped_after_users": result["broken"]["stopped_by_guard_after_users"],
            "interleaved_aa_false_positive_rate": result["interleave"]["aa"]["false_positive_rate"],
            "interleaved_drift_users_until_p_below_0.01": result["interleave"]["drift"][
                "users_until_p_below_0.01"
            ],
        }
    )


def synthetic_options(sub: argparse.ArgumentParser, *, users: int, events_per_user: int, out: str) -> None:
    """The synthetic stream's size, the fit's epochs and the output of a bench that trains on it."""
    sub.add_argument("--users", type=int, default=users, help="users of the synthetic stream")
    sub.add_argument("--items", type=int, default=400)
    sub.add_argument("--events-per-user", type=int, default=events_per_user)
    sub.add_argument("--epochs", type=int, default=20, help="at most this many epochs per model")
    sub.add_argument("--seed", type=int, default=7)
    sub.add_argument("--quiet", action="store_true")
    sub.add_argument("--out", type=Path, default=Path(out))


def add_commands(command) -> None:
    from streamrec.bench.stream import DEFAULT_STRATEGIES
    from streamrec.cli.common import update_options

    bench = command("bench", None, "Benchmarks that write JSON results and plots.")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")

    def benchmark(name: str, handler, help_text: str) -> argparse.ArgumentParser:
        sub = benches.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    speed = benchmark("ingest", ingest, "Append and validate-and-append throughput on synthetic events.")
    speed.add_argument("--events", type=int, default=1_000_000)
    speed.add_argument("--repeats", type=int, default=3)
    speed.add_argument("--seed", type=int, default=7)
    speed.add_argument("--out", type=Path, default=Path("results/ingest.json"))
    speed.add_argument(
        "--store",
        metavar="URL",
        help="also time this PostgreSQL (postgresql://…), in scratch schemas dropped afterwards",
    )

    loo = benchmark("offline", offline, "Leave-one-out full-ranking benchmark of every model.")
    loo.add_argument(
        "--dataset", required=True, help="ml-1m, ml-1m-ts, ml-100k, beauty, or any name for --data"
    )
    loo.add_argument("--data", type=Path, required=True, help="the dataset folder (or a simulate folder)")
    loo.add_argument("--out", type=Path, required=True, help="result JSON (a .md table and .png beside it)")
    loo.add_argument("--models", default="sasrec-hybrid,sasrec-id,mostpop,recentpop,itemknn")
    loo.add_argument(
        "--rerank-minutes",
        type=float,
        default=5.0,
        help="sasrec-hybrid-rerank: the reranker's training minutes",
    )
    loo.add_argument(
        "--rerank-test-users",
        type=int,
        default=2000,
        help="sasrec-hybrid-rerank: test users ranked (a seeded sample; the same with and without it)",
    )
    loo.add_argument("--quiet", action="store_true")
    model_options(loo)

    private = benchmark("dp", dp, "NDCG@10 against ε: differentially private fits on a public dataset.")
    private.add_argument("--dataset", required=True, help="ml-100k, ml-1m, beauty, or any name for --data")
    private.add_argument("--data", type=Path, required=True, help="the dataset folder (or a simulate folder)")
    private.add_argument("--out", type=Path, required=True, help="result JSON (a .png beside it)")
    private.add_argument("--epsilons", default="inf,8,3,1", help="ε of each fit; inf: the non-private fit")
    private.add_argument(
        "--clip-only", action="store_true", help="also a fit clipped and sampled, without noise"
    )
    private.add_argument("--quiet", action="store_true")
    model_options(private)

    http = benchmark("serve", serve, "HTTP throughput, latency and freshness against a live server.")
    home_option(http, store=False)
    http.add_argument("--duration", type=float, default=30.0, help="seconds per phase")
    http.add_argument("--concurrency", type=int, default=16, help="connections (wrk: one thread each)")
    http.add_argument(
        "--workers", type=int, default=1, help="server processes (streamrec serve --workers; default 1)"
    )
    http.add_argument(
        "--load-generator",
        choices=("wrk", "python"),
        help="default: wrk when the wrk binary is on PATH, else the Python client (the JSON says so)",
    )
    http.add_argument(
        "--promote-during",
        action="store_true",
        help="promote a copy of the live version halfway through the mixed phase; count failed requests",
    )
    http.add_argument(
        "--profile",
        action="store_true",
        help="sample the server with py-spy during the recommend phases: time per stage in the JSON",
    )
    http.add_argument("--event-batch", type=int, default=500)
    http.add_argument("--freshness-probes", type=int, default=50)
    http.add_argument("--port", type=int, help="default: a free loopback port")
    http.add_argument("--seed", type=int, default=0)
    http.add_argument(
        "--in-place", action="store_true", help="run on HOME itself (its log gets the synthetic events)"
    )
    http.add_argument("--out", type=Path, default=Path("results/serve.json"))

    prequential = benchmark(
        "stream", stream, "Prequential (test-then-train) benchmark of the shipped update."
    )
    prequential.add_argument(
        "--dataset", required=True, help="ml-1m-ts, ml-100k, or any name for a simulate --data"
    )
    prequential.add_argument(
        "--data", type=Path, required=True, help="the dataset folder (or a simulate folder)"
    )
    prequential.add_argument("--periods", type=int, default=10)
    prequential.add_argument(
        "--strategies",
        default=",".join(DEFAULT_STRATEGIES),
        help="comma-separated: static, full, the incremental strategies, mostpop, recentpop, itemknn;"
        " NAME:id / NAME:text picks another item tower (e.g. replay:id)",
    )
    prequential.add_argument(
        "--eval-limit", type=int, default=10_000, help="events scored per period, a uniform sample (0: all)"
    )
    prequential.add_argument("--out", type=Path, required=True, help="result JSON (a .md and .png beside it)")
    prequential.add_argument("--quiet", action="store_true")
    model_options(prequential)
    update_options(prequential)

    ann = benchmark("retrieval", retrieval, "ANN recall/latency vs exact, and int8 vs float32 scoring.")
    ann.add_argument("--items", type=int, default=200_000)
    ann.add_argument("--dim", type=int, default=64)
    ann.add_argument("--queries", type=int, default=1000)
    ann.add_argument("-k", type=int, default=10)
    ann.add_argument("--seed", type=int, default=7)
    ann.add_argument("--out", type=Path, default=Path("results/retrieval.json"))
    ann.add_argument("--home", type=Path, help="a home with a live model: also compare int8 with float32")
    ann.add_argument("--expansions", default="16,32,64,128,256", help="usearch expansion_search values")
    ann.add_argument("--connectivity", type=int, default=16)
    ann.add_argument("--eval-users", type=int, default=20_000, help="0: all users")

    large = benchmark(
        "catalogue", catalogue, "A large catalogue: simulate, ingest, train (sampled softmax), serve (HNSW)."
    )
    # about 1,000,000 of the 1,400,000 simulated items get events: the model's vocabulary
    large.add_argument("--items", type=int, default=1_400_000, help="items simulated")
    large.add_argument("--users", type=int, default=40_000)
    large.add_argument("--events", type=int, default=4_500_000)
    large.add_argument("--epochs", type=int, default=2, help="training epochs (the fit's --epochs)")
    large.add_argument("--negatives", type=int, default=3000, help="sampled negatives per batch")
    large.add_argument("--requests", type=int, default=1000, help="recommendations timed and checked")
    large.add_argument("--expansions", default="32,64,128,256", help="HNSW expansion_search values to time")
    large.add_argument("--seed", type=int, default=7)
    large.add_argument("--work-dir", type=Path, help="where the scratch home goes (default: the temp folder)")
    large.add_argument("--quiet", action="store_true")
    large.add_argument("--out", type=Path, default=Path("results/catalogue-1m.json"))

    weighted = benchmark(
        "multitask", multitask, "What weighting one event type's loss does to each type's HR@10 (synthetic)."
    )
    weighted.add_argument("--boost", default="purchase", help="the event type whose loss weight varies")
    weighted.add_argument("--weights", default="1,3,10", help="its weights, one model each")
    synthetic_options(weighted, users=6000, events_per_user=40, out="results/multitask-synthetic.json")

    forgets = benchmark(
        "unlearn", unlearn, "Canary users: what a model keeps of them after forget + unlearn."
    )
    forgets.add_argument("--canaries", type=int, default=10, help="canary users planted")
    forgets.add_argument("--repeats", type=int, default=25, help="times each canary goes A → B")
    synthetic_options(forgets, users=1000, events_per_user=20, out="results/unlearn-synthetic.json")

    varied = benchmark("diversity", diversity, "NDCG@10 against intra-list diversity per λ (synthetic).")
    varied.add_argument("--values", default="0,0.1,0.3,0.5,0.7", help="diversity values (MMR's λ)")
    synthetic_options(varied, users=2000, events_per_user=30, out="results/diversity-synthetic.json")

    online = benchmark("ab", ab, "A/A and A/B tests with simulated users, through the server's HTTP API.")
    online.add_argument("--runs", type=int, default=40, help="A/A experiments")
    online.add_argument("--users", type=int, default=300, help="simulated visits per A/A run")
    online.add_argument("--ab-visits", type=int, default=12000, help="visits in each A/B run (drift, broken)")
    online.add_argument(
        "--interleave-visits", type=int, default=12000, help="visits in the interleaved drift run"
    )
    online.add_argument("--look", type=int, default=50, help="visits between two looks at the p-value")
    online.add_argument("--stream-users", type=int, default=600, help="users of the synthetic stream")
    online.add_argument("--seed", type=int, default=7)
    online.add_argument(
        "--work-dir", type=Path, help="where the scratch home goes (default: the temp folder)"
    )
    online.add_argument("--quiet", action="store_true")
    online.add_argument("--out", type=Path, default=Path("results/ab-synthetic.json"))
