"""``serve``: the HTTP API over a home."""

from __future__ import annotations

import argparse

from streamrec.cli.common import home_option


def serve(args: argparse.Namespace) -> None:
    from streamrec.serving.app import serve
    from streamrec.serving.runtime import Runtime

    Runtime.open(args.home).close()  # fail fast, with a clear message, before uvicorn starts
    serve(
        args.home,
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        access_log=args.access_log,
        torch_threads=args.torch_threads,
        worker=not args.no_worker,
        workers=args.workers,
    )


def add_commands(command) -> None:
    srv = command("serve", serve, "Serve recommendations, similar items, search and event intake over HTTP.")
    home_option(srv)
    srv.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument(
        "--api-key",
        help="admin key (prefer the STREAMREC_API_KEY environment variable; STREAMREC_WRITE_KEY and"
        " STREAMREC_READ_KEY give write and read keys; writes need one unless server.open_writes)",
    )
    srv.add_argument(
        "--access-log", action="store_true", help="log every request (off: /metrics counts them)"
    )
    srv.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes on the one port, each with the live model in memory (default 1)",
    )
    srv.add_argument("--torch-threads", type=int, default=1, help="intra-op threads per forward pass")
    srv.add_argument(
        "--no-worker", action="store_true", help="do not run the update worker beside the server"
    )
