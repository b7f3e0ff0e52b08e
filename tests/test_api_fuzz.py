"""The running server keeps its own OpenAPI schema, under generated requests (schemathesis, every check).

A real ``streamrec serve`` on loopback over a small home; schemathesis generates valid and
invalid requests for every operation from ``/openapi.json`` and runs all of its checks on each
answer (``--checks all``): no 5xx, every status code, header and body as documented, invalid
input refused, valid input accepted. One pass sends the admin key, so requests reach past
authentication; one sends none, so the documented 401s are checked too.
``scripts/fuzz_api.py`` runs the same functions long (its result: results/fuzz-api.json).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fuzz_api.py"
_spec = importlib.util.spec_from_file_location("fuzz_api", SCRIPT)
assert _spec is not None and _spec.loader is not None
fuzz_api = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = fuzz_api  # its dataclass looks its module up
_spec.loader.exec_module(fuzz_api)

EXAMPLES = 25  # generated cases per operation and phase, in make test


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = fuzz_api.build_home(tmp_path_factory.mktemp("fuzz") / "home")
    with fuzz_api.running_server(home) as running:
        yield running.url


@pytest.mark.parametrize(("examples", "key"), [(EXAMPLES, fuzz_api.KEY), (5, None)], ids=["admin", "no-key"])
def test_every_operation_keeps_its_schema(server: str, examples: int, key: str | None) -> None:
    report, output = fuzz_api.fuzz(server, examples, key=key)
    found = fuzz_api.summary(report)
    assert found["exit_code"] == 0 and found["unique_failures"] == 0 and found["errors"] == 0, output[-6000:]
    assert found["operations_tested"] == 24 and found["cases"] > 24 * 5
    assert set(found["phases"].values()) <= {"success", "skipped"}, found["phases"]
