"""Fixtures shared by test modules that build a trained home once and write to private copies."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture
def home(built_home: Path, tmp_path: Path) -> Path:
    """A private copy of the module's ``built_home`` fixture, for tests that write to it."""
    copy = tmp_path / "home"
    shutil.copytree(built_home, copy, ignore=shutil.ignore_patterns("*-shm"))
    return copy
