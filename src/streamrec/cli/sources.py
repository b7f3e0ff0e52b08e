"""Events from a stream engine: ``consume`` (Redis Streams, Kafka)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from streamrec.cli.common import CommandError, home_option, print_json
from streamrec.home import Home

if TYPE_CHECKING:
    from streamrec.sources import ConsumeSummary

AGAIN = "the batch in hand was not acknowledged: it will be delivered again"
URL_OPTIONS = "&group=streamrec &consumer=HOSTNAME &dead=STREAM:dead &min_idle_ms=60000"
KAFKA_OPTIONS = "group=streamrec &dead=TOPIC.dead &LIBRDKAFKA.PROPERTY=VALUE"


def _printer() -> Callable[[ConsumeSummary], None]:
    """A progress callback that prints counts and the rate since its last line, to stderr."""
    last = {"read": 0, "at": time.monotonic()}

    def show(summary: ConsumeSummary) -> None:
        now = time.monotonic()
        rate = (summary.read - last["read"]) / max(now - last["at"], 1e-9)
        last.update(read=summary.read, at=now)
        lag = "?" if summary.lag is None else f"{summary.lag:,}"
        print(
            f"{summary.source}: {summary.stored:,} stored, {summary.duplicates:,} duplicates,"
            f" {summary.dead_lettered:,} dead letters, lag {lag} ({rate:,.0f} records/s)",
            file=sys.stderr,
            flush=True,
        )

    return show


def consume(args: argparse.Namespace) -> None:
    from streamrec.sources import SourceError, open_source
    from streamrec.sources import consume as run
    from streamrec.sources.metrics import SourceMetrics

    home = Home.open(args.home)
    try:
        source = open_source(args.url)
    except SourceError as error:
        raise CommandError(str(error), code=1) from None
    metrics = SourceMetrics()
    if args.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr=args.metrics_host, registry=metrics.registry)
    if not args.quiet:
        print(
            f"consuming {source.name} into {args.home}"
            f" ({'until drained' if args.drain else 'Ctrl-C stops after the batch in hand'})",
            file=sys.stderr,
            flush=True,
        )
    with source:
        try:
            summary = run(
                source,
                home,
                max_batch=args.max_batch,
                max_wait_seconds=args.max_wait,
                allow_unknown_fields=args.allow_unknown_fields,
                drain=args.drain,
                metrics=metrics,
                progress=None if args.quiet else _printer(),
                progress_every=args.progress_every,
            )
        except SourceError as error:
            raise CommandError(f"{error} ({AGAIN})", 1) from None
        except KeyboardInterrupt:
            raise CommandError(f"stopped at once by a second signal ({AGAIN})", 130) from None
    if args.json:
        print_json(summary.as_dict())
        return
    lag = "?" if summary.lag is None else f"{summary.lag:,}"
    print(
        f"{summary.source}: {summary.read:,} records in {summary.seconds:.1f}s"
        f" ({summary.events_per_second:,.0f}/s): {summary.stored:,} stored,"
        f" {summary.duplicates:,} duplicates, {summary.dead_lettered:,} dead letters;"
        f" lag {lag}; stopped by {summary.stopped_by}"
    )


def add_commands(command) -> None:
    from streamrec.sources.consumer import DEFAULT_MAX_BATCH, DEFAULT_MAX_WAIT_SECONDS

    con = command(
        "consume",
        consume,
        "Move events from Redis Streams or Kafka into the log until stopped; bad ones become dead letters.",
    )
    con.add_argument(
        "url",
        help=f"redis://HOST:PORT/DB?stream=NAME, options: {URL_OPTIONS};"
        f" or kafka://HOST:PORT/TOPIC, options: ?{KAFKA_OPTIONS}",
    )
    home_option(con)
    con.add_argument(
        "--max-batch", type=int, default=DEFAULT_MAX_BATCH, help=f"records per commit ({DEFAULT_MAX_BATCH:,})"
    )
    con.add_argument(
        "--max-wait",
        type=float,
        default=DEFAULT_MAX_WAIT_SECONDS,
        help=f"seconds a record waits for its batch to fill ({DEFAULT_MAX_WAIT_SECONDS})",
    )
    con.add_argument("--drain", action="store_true", help="exit (0) once the stream has nothing more to read")
    con.add_argument(
        "--allow-unknown-fields", action="store_true", help="ignore extra fields instead of dead-lettering"
    )
    con.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    con.add_argument("--metrics-host", default="127.0.0.1", help="address for --metrics-port (127.0.0.1)")
    con.add_argument("--progress-every", type=float, default=5.0, help="seconds between progress lines")
    con.add_argument("--json", action="store_true", help="print the final summary as JSON")
    con.add_argument("--quiet", action="store_true", help="no progress lines")
