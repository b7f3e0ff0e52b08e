"""A user's data rights: ``forget`` (erase them) and ``export-user`` (what the home holds)."""

from __future__ import annotations

import argparse
import getpass
import json

from streamrec.cli.common import CommandError, existing_home, home_option, print_json


def forget(args: argparse.Namespace) -> None:
    from streamrec.privacy import forget_user, record_json

    home = existing_home(args.home)
    record = forget_user(home, args.user_id, requested_by=args.requested_by or f"cli:{getpass.getuser()}")
    if args.json:
        print_json(record_json(record))
        return
    if not record.events and not record.impressions:
        print(f"no events of {args.user_id!r} in the log; the request {record.request_id} is recorded")
        return
    trained = ", ".join(record.versions) or "none"
    print(
        f"forgot {args.user_id!r}: {record.events:,} events, {record.impressions:,} impressions"
        f" (offsets {record.first_offset}..{record.last_offset}); request {record.request_id}."
        f" Model versions trained on them: {trained}"
    )


def export_user(args: argparse.Namespace) -> None:
    from streamrec.privacy import export_user

    home = existing_home(args.home)
    with home.open_store() as store:
        for line in export_user(store, args.user_id, home.settings.privacy.user_key()):
            print(json.dumps(line, ensure_ascii=False))


def unlearn(args: argparse.Namespace) -> None:
    from streamrec.privacy import pending, unlearn

    home = existing_home(args.home)
    with home.open_store() as store:
        tainted, _ = pending(store, home.registry)
    if not tainted:
        print("no stored model version holds a forgotten user's data")
        return
    done = unlearn(home, progress=not args.quiet)
    made = f"{done.live} is live ({done.how}); " if done.live else ""
    print(f"{made}erased {', '.join(done.erased) or 'nothing'} in {done.seconds:.1f} s")


def purge(args: argparse.Namespace) -> None:
    from streamrec.privacy import purge_expired, record_json

    home = existing_home(args.home)
    days = home.settings.privacy.retention_days if args.days is None else args.days
    if days is None:
        raise CommandError("how old is expired? pass --days, or set privacy.retention_days in streamrec.toml")
    if days <= 0:
        raise CommandError(f"--days: must be positive, got {days:g}")
    record = purge_expired(home, days=days)
    if args.json:
        print_json(record_json(record) if record else None)
    elif record is None:
        print(f"nothing older than {days:g} days")
    else:
        print(
            f"purged {record.events:,} events and {record.impressions:,} impressions older than {days:g} days"
            f" (offsets {record.first_offset}..{record.last_offset}); request {record.request_id}"
        )


def add_commands(command) -> None:
    erase = command(
        "forget",
        forget,
        "Erase a user: their events and impressions leave the store; the request is recorded.",
    )
    erase.add_argument("user_id")
    home_option(erase)
    erase.add_argument("--requested-by", help="who asked, for the record (default: cli:<login name>)")
    erase.add_argument("--json", action="store_true")

    forget_models = command(
        "unlearn",
        unlearn,
        "Refit without forgotten users if the live model learned from them; erase the rest.",
    )
    home_option(forget_models)
    forget_models.add_argument("--quiet", action="store_true", help="no progress bars")

    expire = command(
        "purge",
        purge,
        "Erase events and impressions older than privacy.retention_days (the worker does daily).",
    )
    home_option(expire)
    expire.add_argument(
        "--days", type=float, help="erase what is older than this (default: privacy.retention_days)"
    )
    expire.add_argument("--json", action="store_true")

    export = command("export-user", export_user, "A user's events and what the home derived, as JSON lines.")
    export.add_argument("user_id")
    home_option(export)
