"""Every command the README shows runs, for real, on tiny data.

The README is parsed at test time (never a copy of its commands here): every line of a fenced code
block that starts with ``streamrec`` or ``curl`` (``\\`` continuations joined, trailing ``# comments``
dropped) becomes one test, run in README order in one shared scratch directory, so ``./recs``,
``sim/`` and ``results/`` exist for the commands that need them.

* ``streamrec …`` runs through the installed console script and must exit 0. :func:`adapt` is the one
  place a command is changed before it runs; :data:`SHRUNK` and :data:`APPENDED` list every change.
* ``streamrec serve`` is started in the background on a free port and waited for (``/health``); it
  keeps running for the README's ``curl`` lines, which are sent with httpx (2xx expected), and is
  stopped with Ctrl-C (SIGINT) after the last README command; it must then exit 0.
* ``streamrec worker`` is stopped with Ctrl-C once it is polling the log, and must then exit 0.

Then: every ``streamrec`` sub-command the README names (in code) was run, and every sub-command that
``streamrec --help`` lists is in the README or in :data:`NOT_IN_README`, whose entries each run a
smoke command with real arguments here.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from tiny_datasets import build_shared_datasets

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[1] / "README.md"
STREAMREC = Path(sys.executable).parent / "streamrec"  # [project.scripts] streamrec = streamrec.cli:main
API_KEY = "readme-test-key"
COMMAND_TIMEOUT = 300  # seconds for one command; the whole module takes about two minutes on 2 cores

# ---- every change made to a README command before it runs ---------------------------------------
# 1. Paths under this prefix point at tiny copies of the datasets, written by tests/tiny_datasets.py
#    in the real folders' layout (ml-100k, ml-1m, ml-1m-sasrec, amazon-beauty-s3rec).
SHARED_DATASETS = "../shared/datasets"
# 2. Size options get tiny values (50 users keep the README's u42 a known user, 60 items its i7).
SHRUNK = {"--users": "50", "--items": "60", "--events": "1000", "--duration": "1", "--periods": "3"}
# 3. `serve --port 8000` gets a free port instead (the curl lines' localhost:8000 follows it).
# 4. Budget and size options appended to slow commands (each listed by its `--help`; argparse keeps
#    the last, so an appended option wins over the README's).
APPENDED: dict[tuple[str, ...], list[str]] = {
    ("train",): ["--epochs", "3", "--rerank-minutes", "0.1"],
    ("bench", "ingest"): ["--repeats", "1"],
    ("bench", "offline"): ["--epochs", "1"],
    ("bench", "retrieval"): ["--items", "2000", "--queries", "50", "--eval-users", "50"],
    ("bench", "stream"): ["--periods", "3", "--epochs", "2", "--eval-limit", "200"],
    ("bench", "ab"): [
        "--runs",
        "2",
        "--users",
        "20",
        "--ab-visits",
        "60",
        "--interleave-visits",
        "40",
        "--look",
        "10",
        "--stream-users",
        "60",
    ],
    ("bench", "multitask"): [
        *("--users", "150", "--items", "50", "--events-per-user", "15", "--epochs", "1", "--weights", "1,4")
    ],
    ("bench", "diversity"): [
        *("--users", "100", "--items", "50", "--events-per-user", "15", "--epochs", "1", "--values", "0,0.5")
    ],
    ("bench", "dp"): ["--epochs", "1", "--epsilons", "inf,8"],
    ("bench", "unlearn"): [
        *("--users", "100", "--items", "50", "--events-per-user", "15", "--epochs", "1", "--canaries", "3")
    ],
    ("bench", "catalogue"): [
        *("--users", "100", "--events", "2000", "--epochs", "1", "--negatives", "50", "--requests", "20")
    ],
}
# Nothing else changes: the README's own sub-commands, arguments and order.

# Sub-commands `streamrec --help` lists that the README does not show, each with why, and the smoke
# command (real arguments, run after the README's commands in the same directory) that runs it here.
NOT_IN_README: dict[tuple[str, ...], tuple[str, list[str]]] = {
    ("models", "prune"): ("registry housekeeping (keep_versions)", ["--home", "./recs"]),
    # REDIS is a scratch redis-server's URL (tests/redis_server.py), started for this command.
    ("consume",): ("stream sources, docs/deploy.md", ["REDIS?stream=readme", "--home", "./recs", "--drain"]),
}


@dataclass
class ReadmeCommand:
    line: str  # as the README shows it (continuations joined, comment dropped)
    argv: list[str]

    @property
    def id(self) -> str:
        return self.line if len(self.line) <= 70 else self.line[:67] + "..."


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)


def strip_comment(line: str) -> str:
    """Drop a shell comment: a ``#`` that starts a word outside quotes."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def readme_commands(text: str | None = None) -> list[ReadmeCommand]:
    """The README's ``streamrec`` and ``curl`` lines, in order."""
    commands = []
    for block in code_blocks(README.read_text() if text is None else text):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = strip_comment(line.strip())
            argv = shlex.split(line)
            if argv and argv[0] in ("streamrec", "curl"):
                commands.append(ReadmeCommand(" ".join(line.split()), argv))
    return commands


def test_readme_parsing() -> None:
    text = (
        "```\nmake demo    # no\nstreamrec a --x 1 \\\n   --y 'p q' # note\n```\n"
        "text `streamrec b`\n```\ncurl -d '{\"#\": 1}' host/p#frag\n```\n"
    )
    assert [c.argv for c in readme_commands(text)] == [
        ["streamrec", "a", "--x", "1", "--y", "p q"],
        ["curl", "-d", '{"#": 1}', "host/p#frag"],
    ]


# ---- the CLI's sub-commands, from its --help ----------------------------------------------------


def _help(*words: str) -> str:
    """``streamrec WORDS --help``, from the console script's own function, in this process (fast)."""
    (script,) = entry_points(group="console_scripts", name="streamrec")
    shown = io.StringIO()
    with contextlib.redirect_stdout(shown), pytest.raises(SystemExit) as exited:
        script.load()([*words, "--help"])
    assert exited.value.code in (0, None), f"streamrec {' '.join(words)} --help: exit {exited.value.code}"
    return shown.getvalue()


def _listed(help_text: str) -> list[str]:
    """Sub-command names in a help text: sub-parsers (``COMMAND``'s entries) or a positional's choices."""
    if "positional arguments:" not in help_text:
        return []
    section = help_text.split("positional arguments:", 1)[1].split("\n\n", 1)[0]
    names = re.findall(r"^    ([a-z][\w-]*)(?:  |$)", section, flags=re.M)
    for choices in re.findall(r"^  \{([^}]*)\}", section, flags=re.M):
        names += choices.split(",")
    return names


@cache
def cli_commands() -> frozenset[tuple[str, ...]]:
    """Every leaf sub-command: ``("train",)``, ``("bench", "offline")``, ``("models", "list")`` …"""
    found = set()
    for name in _listed(_help()):
        nested = _listed(_help(name))
        found |= {(name, n) for n in nested} if nested else {(name,)}
    return frozenset(found)


def command_key(words: list[str]) -> tuple[str, ...]:
    """``["bench", "offline", "--x"]`` → ``("bench", "offline")``; ``["train", …]`` → ``("train",)``."""
    nested = {key[0] for key in cli_commands() if len(key) == 2}
    return tuple(words[:2]) if words[0] in nested and len(words) > 1 else tuple(words[:1])


def test_appended_budget_options_exist() -> None:
    for key, extra in APPENDED.items():
        text = _help(*key)
        missing = [flag for flag in extra if flag.startswith("--") and flag not in text]
        assert not missing, f"`streamrec {' '.join(key)} --help` no longer lists {missing}: update APPENDED"


# ---- the shared scratch directory and the processes running in it --------------------------------


@dataclass
class Workspace:
    cwd: Path
    datasets: Path
    env: dict[str, str]
    port: int | None = None
    server: subprocess.Popen | None = None
    background: list[subprocess.Popen] = field(default_factory=list)
    ran: set[tuple[str, ...]] = field(default_factory=set)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    root = tmp_path_factory.mktemp("readme")
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        STREAMREC_API_KEY=API_KEY,
        XDG_CACHE_HOME=str(root / "cache"),  # bench offline/stream keep a text cache there
    )
    # One torch thread per process: faster for models this small, and with two threads a command
    # can take ten times as long on a 2-core machine that is busy with anything else.
    env.setdefault("OMP_NUM_THREADS", "1")
    (root / "run").mkdir()
    space = Workspace(root / "run", build_shared_datasets(root / "shared-datasets"), env)
    yield space
    for process in space.background:  # what a failed test left running: Ctrl-C, then its whole group
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # its children too (the server's worker and updates)
        process.wait()


def adapt(argv: list[str], space: Workspace) -> list[str]:
    """The README's ``streamrec`` argv as run here: the four changes listed at the top, nothing else."""
    out = []
    for i, word in enumerate(argv[1:], start=1):
        option = argv[i - 1]
        if word.startswith(SHARED_DATASETS):
            word = str(space.datasets) + word.removeprefix(SHARED_DATASETS)
        elif option in SHRUNK:
            word = SHRUNK[option]
        elif option == "--port":
            space.port = free_port()
            word = str(space.port)
        out.append(word)
    return [str(STREAMREC), *out, *APPENDED.get(command_key(out), [])]


def _tail(path_or_text: Path | str, chars: int = 4000) -> str:
    text = path_or_text.read_text(errors="replace") if isinstance(path_or_text, Path) else path_or_text
    return text[-chars:]


def run_streamrec(command: ReadmeCommand, space: Workspace) -> None:
    argv = adapt(command.argv, space)
    shown = f"README: {command.line}\nran:    {shlex.join(argv[1:])}"
    done = subprocess.run(
        argv, cwd=space.cwd, env=space.env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT
    )
    if done.returncode != 0:
        output = f"--- stdout\n{_tail(done.stdout)}\n--- stderr\n{_tail(done.stderr)}"
        pytest.fail(f"exit {done.returncode}\n{shown}\n{output}")


def start_background(
    command: ReadmeCommand, space: Workspace, name: str, *, as_shell_job: bool = False
) -> tuple[subprocess.Popen, Path]:
    """``as_shell_job``: started as ``cmd &`` in a script starts it, with SIGINT ignored."""
    argv = adapt(command.argv, space)
    log = space.cwd.parent / f"{name}.log"
    with log.open("w") as handle:
        process = subprocess.Popen(
            argv,
            cwd=space.cwd,
            env=space.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if as_shell_job else None,
        )
    space.background.append(process)
    return process, log


def wait_until(ready, process: subprocess.Popen, log: Path, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, f"{what} exited with {process.returncode}:\n{_tail(log)}"
        assert time.monotonic() < deadline, f"{what} not ready after {timeout:.0f} s:\n{_tail(log)}"
        time.sleep(0.3)


def stop_with_ctrl_c(process: subprocess.Popen, log: Path, what: str) -> None:
    process.send_signal(signal.SIGINT)
    try:
        code = process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"{what} did not stop within 60 s of Ctrl-C:\n{_tail(log)}")
    assert code == 0, f"{what} exited with {code} after Ctrl-C:\n{_tail(log)}"


def run_serve(command: ReadmeCommand, space: Workspace) -> None:
    """Start the server; it stays up for the curl lines until test_server_stops_cleanly."""
    process, log = start_background(command, space, "serve")
    space.server = process

    def healthy() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{space.port}/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(healthy, process, log, f"`{command.line}`")


def run_worker(command: ReadmeCommand, space: Workspace) -> None:
    """Start the worker, wait until it holds the store open (it is polling), then Ctrl-C it."""
    process, log = start_background(command, space, "worker", as_shell_job=True)

    def polling() -> bool:
        fds = Path(f"/proc/{process.pid}/fd")
        if not fds.is_dir():  # no /proc: give it time to import and open the store
            time.sleep(15)
            return True
        try:
            return any(str(fd.readlink()).endswith("streamrec.sqlite") for fd in fds.iterdir())
        except OSError:
            return False

    wait_until(polling, process, log, f"`{command.line}`")
    time.sleep(1)
    stop_with_ctrl_c(process, log, f"`{command.line}`")


# Commands that run until stopped.
LONG_RUNNING = {("serve",): run_serve, ("worker",): run_worker}


def run_curl(command: ReadmeCommand, space: Workspace) -> None:
    """The curl line as an httpx request to the running server (``$VARS`` from the environment)."""
    assert space.server is not None and space.server.poll() is None, "no `streamrec serve` is running"
    method, headers, data, url = None, {}, None, None
    words = iter(re.sub(r"\$(\w+)", lambda m: space.env[m.group(1)], w) for w in command.argv[1:])
    for word in words:
        if word in ("-X", "--request"):
            method = next(words)
        elif word in ("-H", "--header"):
            name, _, value = next(words).partition(":")
            headers[name.strip()] = value.strip()
        elif word in ("-d", "--data"):
            data = next(words)
        elif word.startswith("-"):
            pytest.fail(f"curl option {word} is not translated by run_curl: {command.line}")
        else:
            url = word
    assert url, command.line
    parts = urlsplit(url if "://" in url else "http://" + url)
    url = urlunsplit(parts._replace(netloc=f"127.0.0.1:{space.port}"))
    method = method or ("POST" if data is not None else "GET")
    response = httpx.request(method, url, headers=headers, content=data, timeout=60)
    assert response.is_success, f"{command.line}\n→ {method} {url}: {response.status_code} {response.text}"


@pytest.mark.parametrize("command", readme_commands(), ids=lambda c: c.id)
def test_readme_command(command: ReadmeCommand, workspace: Workspace) -> None:
    if command.argv[0] == "curl":
        run_curl(command, workspace)
        return
    key = command_key(command.argv[1:])
    workspace.ran.add(key)
    LONG_RUNNING.get(key, run_streamrec)(command, workspace)


@pytest.mark.parametrize("key", list(NOT_IN_README), ids=" ".join)
def test_sub_command_not_in_readme(key: tuple[str, ...], workspace: Workspace) -> None:
    argv = ["streamrec", *key, *NOT_IN_README[key][1]]
    workspace.ran.add(key)
    if not any(arg.startswith("REDIS") for arg in argv):
        run_streamrec(ReadmeCommand(" ".join(argv), argv), workspace)
        return
    from redis_server import REDIS_SERVER, running_redis

    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (scripts/install_servers.sh installs it with apt)")
    with running_redis(workspace.cwd.parent / "redis") as url:
        argv = [arg.replace("REDIS", url, 1) if arg.startswith("REDIS") else arg for arg in argv]
        run_streamrec(ReadmeCommand(" ".join(argv), argv), workspace)


def test_server_stops_cleanly(workspace: Workspace) -> None:
    """Ctrl-C stops the server with exit 0, after any update a curl line started has finished."""
    shows_serve = any(c.argv[:2] == ["streamrec", "serve"] for c in readme_commands())
    if workspace.server is None:
        assert not (shows_serve and workspace.ran), "the README shows `streamrec serve` but it never started"
        pytest.skip("the README's commands were deselected, or it shows no `streamrec serve`")
    log = workspace.cwd.parent / "serve.log"
    url = f"http://127.0.0.1:{workspace.port}/admin/update"
    deadline = time.monotonic() + COMMAND_TIMEOUT
    while workspace.server.poll() is None:
        job = httpx.get(url, headers={"X-API-Key": API_KEY}, timeout=10).json()
        if not job["running"]:
            assert job["exit_code"] in (None, 0), f"the server's update job failed:\n{job['output']}"
            break
        assert time.monotonic() < deadline, f"the server's update job still runs:\n{job['output']}"
        time.sleep(0.5)
    stop_with_ctrl_c(workspace.server, log, "`streamrec serve`")


# ---- coverage, both ways -------------------------------------------------------------------------


def test_every_readme_sub_command_ran(workspace: Workspace) -> None:
    """Each ``streamrec X`` the README names in code (blocks or inline) ran above."""
    if not workspace.ran:
        pytest.skip("the README commands were not run in this session")
    text = README.read_text()
    code = "\n".join(code_blocks(text) + re.findall(r"`([^`\n]+)`", text))
    named = {command_key(m.split()) for m in re.findall(r"\bstreamrec ([a-z][\w-]*(?: [a-z][\w-]*)?)", code)}
    assert not named - workspace.ran, f"named in the README but not run: {sorted(named - workspace.ran)}"


def test_every_cli_sub_command_is_in_readme_or_allowlisted() -> None:
    shown = {command_key(c.argv[1:]) for c in readme_commands() if c.argv[0] == "streamrec"}
    missing = sorted(cli_commands() - shown - set(NOT_IN_README))
    assert not missing, f"`streamrec --help` lists sub-commands the README does not show: {missing}"
    stale = sorted(set(NOT_IN_README) - cli_commands())
    assert not stale, f"NOT_IN_README lists sub-commands the CLI no longer has: {stale}"


# ---- the README's first command ------------------------------------------------------------------


def test_make_demo_runs_the_main_job(tmp_path: Path) -> None:
    """``make demo``'s script, as a newcomer runs it (not on a terminal, so it stops after its tour)."""
    root = README.parent
    env = {**os.environ, "DEMO_HOME": str(tmp_path / "demo"), "DEMO_PORT": str(free_port())}
    env.setdefault("OMP_NUM_THREADS", "1")
    done = subprocess.run(
        ["bash", "scripts/demo.sh"],
        cwd=root,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "promoted, now live" in done.stdout or "rejected" in done.stdout  # the update ran and was judged
    assert '"model_version"' in done.stdout  # the served recommendation answered


def test_readme_settings_example_is_valid() -> None:
    """The README's ``streamrec.toml`` example loads as a home's settings."""
    import tomllib

    from streamrec.config import settings_from

    blocks = re.findall(r"^```toml\n(.*?)^```", README.read_text(), flags=re.S | re.M)
    assert blocks, "the README shows no streamrec.toml"
    for block in blocks:
        settings = settings_from(tomllib.loads(block), "README.md")
        assert settings.model.type_weights == {"purchase": 3.0}
