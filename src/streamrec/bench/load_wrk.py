"""The ``wrk`` load generator: one ``wrk`` run per phase, with ``wrk/serve_load.lua`` as its script.

``wrk`` (C, epoll) costs a small fraction of the CPU a Python client needs for the same
requests, so on a machine it shares with the server it takes far less from the server.
It runs one connection per thread, which lets the Lua script time each request itself
and keep only the latencies of the requests a phase measures (see the script's header).
The users and items go to the script as files; everything else through its environment.
Its CPU time is the child's own rusage (``os.wait4``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path
from urllib.parse import quote

from streamrec.bench.load import K, Phase, PhaseResult, Target

SCRIPT = "serve_load.lua"
REQUEST_TIMEOUT = "30s"  # wrk counts a request unanswered this long as a timeout error


def wrk_binary() -> str | None:
    """The ``wrk`` on PATH (Debian: ``apt-get install wrk``), or None."""
    return shutil.which("wrk")


def _write_ids(path: Path, ids: list[str]) -> None:
    """One ``url-quoted<TAB>JSON string`` line per id, so the script needs no escaping of its own."""
    path.write_text("".join(f"{quote(i, safe='')}\t{json.dumps(i)}\n" for i in ids), encoding="utf-8")


class WrkLoad:
    """Runs each phase as ``wrk -t C -c C -d Ns -s serve_load.lua BASE``; files go to ``workdir``."""

    name = "wrk"

    def __init__(self, target: Target, workdir: Path, binary: str | None = None) -> None:
        found = binary or wrk_binary()
        if found is None:
            raise ValueError("no wrk binary on PATH (Debian: apt-get install wrk)")
        self.binary = found
        self.target = target
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.users_file = self.workdir / "users.tsv"
        self.items_file = self.workdir / "items.tsv"
        _write_ids(self.users_file, target.users)
        _write_ids(self.items_file, target.items)
        self.runs = 0

    def describe(self) -> str:
        """``wrk -v``'s first line, e.g. ``wrk debian/4.1.0-3+b2 [epoll] …``."""
        shown = subprocess.run([self.binary, "-v"], capture_output=True, text=True, check=False)
        return (shown.stdout or shown.stderr).splitlines()[0].strip()

    def run(self, phase: Phase, duration: float, concurrency: int, seed: int) -> PhaseResult:
        """One ``wrk`` run; raises ``RuntimeError`` with its output when it fails.

        ``wrk -d`` takes whole seconds: ``duration`` is rounded (at least 1 s); the result's
        ``seconds`` is the time wrk reports it ran.
        """
        self.runs += 1
        out = self.workdir / f"{self.runs:02d}-{phase.name}.json"
        log = self.workdir / f"{self.runs:02d}-{phase.name}.log"
        env = {
            **os.environ,
            "STREAMREC_WRK_MODE": phase.kind,
            "STREAMREC_WRK_USERS": str(self.users_file),
            "STREAMREC_WRK_ITEMS": str(self.items_file),
            "STREAMREC_WRK_KEY": self.target.key,
            "STREAMREC_WRK_AFTER_EVENT": repr(phase.after_event),
            "STREAMREC_WRK_BATCH": str(phase.batch),
            "STREAMREC_WRK_K": str(K),
            "STREAMREC_WRK_TS_OFFSET": repr(self.target.ts_offset),
            "STREAMREC_WRK_TAG": f"bench-serve-{self.target.tag}-{self.runs}",
            "STREAMREC_WRK_SEED": str(seed),
            "STREAMREC_WRK_THREADS": str(concurrency),
            "STREAMREC_WRK_OUT": str(out),
        }
        seconds = max(1, round(duration))
        with resources.as_file(resources.files("streamrec.bench") / "wrk" / SCRIPT) as script:
            command = [
                *(self.binary, "-t", str(concurrency), "-c", str(concurrency), "-d", f"{seconds}s"),
                *("--timeout", REQUEST_TIMEOUT, "-s", str(script), self.target.base),
            ]
            with log.open("w") as output:
                process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env)
            try:
                _, status, usage = os.wait4(process.pid, 0)
                process.returncode = os.waitstatus_to_exitcode(status)
            finally:
                if process.returncode is None:
                    process.kill()
                    process.wait()
        if process.returncode != 0 or not out.exists():
            raise RuntimeError(
                f"wrk exited with status {process.returncode} in the {phase.name} phase:\n"
                + log.read_text()[-3000:]
            )
        figures = json.loads(out.read_text())
        result = PhaseResult(
            seconds=figures["duration_us"] / 1e6,
            socket_errors=sum(figures["socket_errors"].values()),
            generator_cpu=usage.ru_utime + usage.ru_stime,
        )
        for thread in figures["threads"]:  # each thread's own figures, merged
            result.latencies_ms.extend(us / 1000 for us in thread["latencies_us"])
            result.events_posted += thread["events_posted"]
            result.non_2xx += thread["non_2xx"]
            for status, count in thread["statuses"].items():
                result.statuses[status] = result.statuses.get(status, 0) + count
            result.error_times.extend(thread["error_times"])
            for version, (first, last) in thread["versions"].items():
                result.answered(version, first)
                result.answered(version, last)
        result.requests = len(result.latencies_ms)
        if result.socket_errors:
            result.error_examples.append(f"wrk socket errors: {figures['socket_errors']}")
        return result
