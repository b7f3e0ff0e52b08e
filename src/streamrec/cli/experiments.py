"""``streamrec ab``: A/B tests between two model versions (start, status, stop, list)."""

from __future__ import annotations

import argparse
from typing import Any

from streamrec import experiments
from streamrec.cli.common import existing_home, home_option, print_json


def _figure(arm: dict[str, Any], name: str) -> str:
    figure = arm.get(name)
    if not figure:
        return "-"
    low, high = figure["ci95"]
    return f"{figure['rate']:.4f} [{low:.4f}, {high:.4f}]"


def print_judgement(judgement: dict[str, Any]) -> None:
    method = judgement.get("method", "split")
    print(f"experiment {judgement['experiment']} ({'running' if judgement['running'] else 'stopped'}),"
          f" {method}, metric {judgement['metric']}, alpha {judgement['alpha']}")  # fmt: skip
    rate = "wins" if method == "interleave" else "ctr"
    print(f"{'arm':4} {'version':8} {'users':>6} {'shown':>7} {'clicks':>7} {'buys':>6}  {rate} [95 % CI]")
    for name, arm in judgement["arms"].items():
        print(
            f"{name:4} {arm['version']:8} {arm.get('users', 0):>6} {arm['impressions']:>7}"
            f" {arm.get('clicks', 0):>7} {arm.get('conversions', 0):>6}  {_figure(arm, rate)}"
        )
    print(
        f"b - a: {judgement['difference']:+.4f}, p = {judgement['p_value']:.4g} (sequential;"
        f" fixed-horizon {judgement['p_value_fixed_horizon']:.4g}), decision: {judgement['decision']}"
    )


def ab(args: argparse.Namespace) -> None:
    home = existing_home(args.home)
    registry = home.registry
    if args.action == "start":
        a = args.a or registry.live()
        if a is None or args.b is None:
            raise ValueError("ab start needs --b VERSION (and --a VERSION when no version is live)")
        experiment = experiments.start(
            registry, a, args.b, share=args.share, metric=args.metric, alpha=args.alpha, method=args.method
        )
        who = "interleaved in every answer" if experiment.interleaved else f"for {args.share:.0%} of users"
        print(f"experiment {experiment.id} started: a = {experiment.a}, b = {experiment.b} {who}")
        return
    if args.action == "list":
        rows = experiments.experiments(registry)
        if args.json:
            print_json([experiments.public(e) for e in rows])
            return
        for e in rows:
            decision = (e.result or {}).get("decision", "-")
            state = "running" if e.running else f"stopped, decision {decision}"
            split = "interleave" if e.interleaved else f"share={e.share}"
            print(f"{e.id}  a={e.a}  b={e.b}  {split}  metric={e.metric}  {state}")
        return
    if args.action == "status":
        current = experiments.running(registry)
        if current is None:
            raise LookupError("no experiment is running (streamrec ab list shows the ended ones)")
        with home.open_store() as store:
            judgement = experiments.judge(current, store, home.settings.online)
        if args.json:
            print_json(judgement)
        else:
            print_judgement(judgement)
        return
    with home.open_store() as store:
        judgement = experiments.conclude(registry, store, home.settings.online, args.promote)
    target = judgement["promoted"]
    if target is not None and target != registry.live():
        registry.promote(target)
    if args.json:
        print_json(judgement)
        return
    print_judgement(judgement)
    print(f"experiment {judgement['experiment']} stopped; {registry.live()} is live")


def add_commands(command) -> None:
    test = command("ab", ab, "A/B tests between model versions: start, status, stop, list.")
    home_option(test)
    test.add_argument("action", choices=["start", "status", "stop", "list"])
    test.add_argument("--a", help="start: arm a's version (default: the live one)")
    test.add_argument("--b", help="start: arm b's version")
    test.add_argument("--share", type=float, default=0.5, help="start: the part of users in arm b")
    test.add_argument(
        "--metric", choices=["clicks", "conversions", "hits"], default="clicks", help="start: what decides"
    )
    test.add_argument("--alpha", type=float, default=0.05, help="start: the false-positive rate allowed")
    test.add_argument(
        "--method",
        choices=["split", "interleave"],
        default="split",
        help="start: split users between the arms, or interleave both versions' lists (team draft)",
    )
    test.add_argument(
        "--promote",
        choices=["winner", "a", "b", "none"],
        default="none",
        help="stop: promote the significant winner (if there is one), an arm, or nothing",
    )
    test.add_argument("--json", action="store_true")
