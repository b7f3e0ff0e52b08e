"""Fixtures shared by test modules that build a trained home once and write to private copies."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from pg_server import pg_url  # noqa: F401 — the session's PostgreSQL server, for any test that asks


@pytest.fixture
def home(built_home: Path, tmp_path: Path) -> Path:
    """A private copy of the module's ``built_home`` fixture, for tests that write to it."""
    copy = tmp_path / "home"
    shutil.copytree(built_home, copy, ignore=shutil.ignore_patterns("*-shm"))
    return copy


@pytest.fixture
def tiny_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """``run_stream_benchmark`` options for a small simulated stream and a tiny ID-only model."""
    from streamrec.config import UpdateSettings
    from streamrec.data.synthetic import simulate
    from streamrec.models.sasrec import SASRecConfig

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the text cache goes to scratch
    simulate(tmp_path / "stream", users=60, items=80, events=3000, seed=0)
    return {
        "dataset": "synthetic",
        "data": tmp_path / "stream",
        "out": tmp_path / "stream.json",
        "periods": 3,
        "config": SASRecConfig(hidden=16, layers=1, max_len=20, epochs=2, batch_size=64, item_tower="id"),
        "update": UpdateSettings(epochs=1, full_epochs=2, replay_users=10),
        "eval_limit": 100,
        "progress": False,
    }
