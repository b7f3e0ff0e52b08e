"""Where a server's time goes under load: py-spy samples its processes, stacks sorted into stages.

``bench serve --profile`` records every server process during each recommend phase
(``py-spy record --format raw``: one line per distinct stack, ``frame;frame;… count``) and
reports the share of samples per stage. A sample counts for the stage of the innermost
frame that belongs to one (a stage is a set of code locations), so time in torch called
from the model counts as ``model``, and time in a JSON encoder called by FastAPI as
``response``. Idle threads are not sampled. py-spy's own CPU shares the machine: a
profiled run's throughput is not a headline figure.

>>> stage_of(["run (uvicorn/server.py:68)", "recommend (streamrec/serving/runtime.py:440)"])
'runtime'
>>> stage_of(["recommend (streamrec/serving/runtime.py:440)", "forward (torch/nn/modules/module.py:1)"])
'model'
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# (stage, path fragments of its code): the innermost frame matching any fragment names the stage
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("model", ("torch/", "streamrec/models/")),
    ("top-k", ("streamrec/serving/retrieval.py", "usearch/")),
    ("store", ("streamrec/store/", "sqlite3/", "psycopg/")),
    ("cache", ("streamrec/serving/cache.py",)),
    ("runtime", ("streamrec/serving/runtime.py",)),
    ("response", ("json/", "fastapi/encoders.py", "serialize_response (", "pydantic", "orjson")),
    ("metrics", ("prometheus_client/", "streamrec/serving/metrics.py")),
    ("access", ("streamrec/serving/access.py", "limits/")),
    ("framework", ("fastapi/", "starlette/", "anyio/")),
    ("http", ("uvicorn/", "httptools/", "h11/", "uvloop/", "asyncio/")),
)
PROFILED_STAGES = (*(name for name, _ in STAGES), "other")


def stage_of(stack: Sequence[str]) -> str:
    """The stage of one sampled stack (outermost frame first)."""
    for frame in reversed(stack):
        for name, fragments in STAGES:
            if any(fragment in frame for fragment in fragments):
                return name
    return "other"


def py_spy_binary() -> str:
    """py-spy beside this Python (its virtual environment's scripts), else on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    found = str(beside) if beside.is_file() else shutil.which("py-spy")
    if found is None:
        raise RuntimeError("--profile needs py-spy: pip install 'streamrec[dev]' (or pip install py-spy)")
    return found


class Recording:
    """``py-spy record`` of a process and its children for ``seconds``, started in the background."""

    def __init__(self, pid: int, seconds: float, out: Path, rate: int = 100) -> None:
        self.out = out
        command = [py_spy_binary(), "record", "--pid", str(pid), "--subprocesses", "--format", "raw"]
        command += ["--rate", str(rate), "--duration", str(max(1, round(seconds))), "--output", str(out)]
        command += ["--nonblocking"]  # never pause the server: samples may tear, latencies stay true
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def summary(self, top: int = 12) -> dict[str, Any]:
        """Wait for py-spy; samples per stage (shares) and the innermost functions seen most."""
        _, stderr = self.process.communicate(timeout=120)
        if self.process.returncode != 0 or not self.out.exists():
            raise RuntimeError(f"py-spy failed ({self.process.returncode}): {stderr.decode()[-1000:]}")
        stages: Counter[str] = Counter()
        leaves: Counter[str] = Counter()
        for line in self.out.read_text(errors="replace").splitlines():  # nonblocking: a torn frame
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            frames = stack.split(";")
            stages[stage_of(frames)] += int(count)
            leaves[frames[-1]] += int(count)
        samples = sum(stages.values())
        if not samples:
            return {"samples": 0}
        return {
            "samples": samples,
            "stages": {name: round(stages[name] / samples, 4) for name in PROFILED_STAGES if stages[name]},
            "top_functions": [
                {"frame": frame, "share": round(n / samples, 4)} for frame, n in leaves.most_common(top)
            ],
        }
