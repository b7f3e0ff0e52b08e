"""The model's life: ``train``, ``recommend``, ``update``, ``worker``, ``models``."""

from __future__ import annotations

import argparse

from streamrec.cli.common import (
    existing_home,
    home_option,
    model_config,
    model_options,
    print_json,
    update_options,
    update_settings,
)
from streamrec.home import Home


def train(args: argparse.Namespace) -> None:
    from streamrec.training.continual import train_and_register

    home = existing_home(args.home)
    config = model_config(args, home.settings.model)
    unknown = sorted(set(config.type_weights) - set(home.settings.event_types))
    if unknown:
        raise ValueError(f"--type-weight: unknown event type {', '.join(map(repr, unknown))}"
                         f" (known: {', '.join(home.settings.event_types)})")  # fmt: skip
    info = train_and_register(
        home,
        config,
        text_model=args.text_model,
        rerank=args.rerank,
        rerank_minutes=args.rerank_minutes,
        progress=not args.quiet,
    )
    if args.json:
        print_json(info.to_dict())
        return
    metrics = ", ".join(f"{k}={v:.4f}" for k, v in info.metrics.items() if k in ("ndcg@10", "hr@10"))
    print(f"{info.version} is live: trained through offset {info.trained_through_offset}, {metrics}")
    if info.reranker:
        print(_reranker_line(info.reranker))
    tuning = info.update.get("tuning", {})
    if "skipped" in tuning:
        print(f"update settings not tuned: {tuning['skipped']}")
    else:
        chosen = ", ".join(f"{key}={value}" for key, value in tuning["chosen"].items())
        print(f"updates tuned on the newest events ({tuning['examples']} judged): {chosen}")


def recommend(args: argparse.Namespace) -> None:
    from streamrec.serving.runtime import Runtime

    with Runtime.open(args.home) as engine:
        result = engine.recommend(
            args.user_id,
            k=args.k,
            exclude_seen=not args.include_seen,
            diversity=args.diversity,
            explain=args.explain,
        )
    if args.json:
        print_json(result)
        return
    print(f"user {args.user_id} — from {result['source']}, model version {result['model_version']}:")
    for rank, entry in enumerate(result["items"], start=1):
        print(f"{rank:>3}. {entry['item_id']:<12} {entry['score']:>8.3f}  {entry['title']}")
        for reason in entry.get("because") or ():
            print(f"{'':>17}because of {reason['item_id']} ({reason['similarity']:.2f}) {reason['title']}")


def outcome_line(outcome) -> str:
    if outcome.version is None:
        return f"nothing to learn: {outcome.reason}"
    state = "promoted, now live" if outcome.promoted else outcome.version.status
    return f"{outcome.version.version} ({outcome.version.strategy}): {state}; {outcome.reason}"


def _with_update_overrides(args: argparse.Namespace) -> Home:
    """The home, its update settings overridden by the command line for this run."""
    home = existing_home(args.home)
    return Home(
        home.path, home.settings.model_copy(update={"update": update_settings(args, home.settings.update)})
    )


def update(args: argparse.Namespace) -> None:
    from streamrec.training.continual import run_update

    outcome = run_update(_with_update_overrides(args), promote=not args.no_promote, progress=not args.quiet)
    if args.json:
        version = outcome.version.to_dict() if outcome.version else None
        print_json({"version": version, "promoted": outcome.promoted, "reason": outcome.reason})
    else:
        print(outcome_line(outcome))


def worker(args: argparse.Namespace) -> None:
    import logging
    import signal

    from streamrec.training.worker import run_worker

    # A shell starts background jobs with SIGINT ignored, and Python then keeps it ignored:
    # the worker must stop on Ctrl-C / kill -INT however it was started, and on SIGTERM too.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        outcomes = run_worker(_with_update_overrides(args), once=args.once)
    except KeyboardInterrupt:
        return
    for outcome in outcomes:
        print(outcome_line(outcome))


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def models(args: argparse.Namespace) -> None:
    home = existing_home(args.home)
    registry = home.registry
    if args.action == "list":
        versions = registry.versions()
        if args.json:
            print_json([v.to_dict() for v in versions])
            return
        # NDCG@10: a full fit's on each user's last item; an update's on the held-out newest
        # events, beside the live model's on the same events ("vs live").
        header = ("version", "status", "strategy", "parent", "offset", "ndcg@10", "vs live")
        print("{:8} {:9} {:15} {:7} {:>9} {:>8} {:>8}  notes".format(*header))
        for v in versions:
            ndcg, live_ndcg = v.metrics.get("ndcg@10"), v.guardrail.get("live_ndcg@10")
            print(
                f"{v.version:8} {v.status:9} {v.strategy:15} {v.parent or '-':7}"
                f" {v.trained_through_offset:>9} {_number(ndcg):>8} {_number(live_ndcg):>8}  {v.notes[:60]}"
            )
    elif args.action == "show":
        print_json(registry.get(args.version or registry.live() or "").to_dict())
    elif args.action == "promote":
        if not args.version:
            raise ValueError("models promote needs a VERSION")
        print(f"{registry.promote(args.version).version} is live")
    elif args.action == "rollback":
        print(f"rolled back: {registry.rollback().version} is live")
    elif args.action == "prune":
        removed = registry.prune(home.settings.keep_versions)
        print(f"removed {', '.join(removed) or 'nothing'}")


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, not {text!r}")
    return value


def _reranker_line(report: dict) -> str:
    if "reason" in report:
        return f"LM reranker not used: {report['reason']} the version did not train on"
    verdict = "used" if report["enabled"] else "not used (no better than the model alone)"
    return (
        f"LM reranker {verdict}: NDCG@10 {report['check_ndcg@10_without']:.4f} →"
        f" {report['check_ndcg@10_with']:.4f} on {report['check_examples']} held-aside events"
        f" ({report['learned']} learned in {report['seconds']:.0f} s)"
    )


def add_commands(command) -> None:
    fit = command("train", train, "Fit the model from scratch on the whole log; the new version goes live.")
    home_option(fit)
    model_options(fit)
    fit.add_argument(
        "--rerank",
        choices=["none", "lm"],
        help="lm: a cross-encoder re-scores the top candidates (default: the home's [model] rerank)",
    )
    fit.add_argument(
        "--rerank-minutes",
        type=float,
        help="--rerank lm: the reranker's training minutes (default: [model] rerank_minutes, else 5)",
    )
    fit.add_argument("--json", action="store_true")
    fit.add_argument("--quiet", action="store_true", help="no progress bars")

    rec = command(
        "recommend", recommend, "Top-k items for a user from the live model and their latest events."
    )
    rec.add_argument("user_id")
    home_option(rec)
    rec.add_argument("-k", type=int, default=10)
    rec.add_argument("--include-seen", action="store_true", help="also recommend items the user already has")
    rec.add_argument(
        "--diversity", type=_share, default=0.0, help="0 (the model's ranking) to 1 (most varied)"
    )
    rec.add_argument("--explain", action="store_true", help="name the history items behind each item")
    rec.add_argument("--json", action="store_true")

    upd = command("update", update, "Learn the events since the live version; promote if not worse.")
    home_option(upd)
    update_options(upd)
    upd.add_argument("--no-promote", action="store_true", help="keep a passing candidate as a candidate")
    upd.add_argument("--json", action="store_true")
    upd.add_argument("--quiet", action="store_true")

    work = command("worker", worker, "Keep updating the model as events arrive (Ctrl-C stops).")
    home_option(work)
    update_options(work)
    work.add_argument("--once", action="store_true", help="one update now, then exit")

    registry = command("models", models, "The model registry: list, show, promote, rollback, prune.")
    home_option(registry, store=False)
    registry.add_argument("action", choices=["list", "show", "promote", "rollback", "prune"])
    registry.add_argument("version", nargs="?", help="for show (default: live) and promote")
    registry.add_argument("--json", action="store_true")
