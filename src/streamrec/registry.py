"""The model registry: every trained version on disk, and which one is live.

Layout under ``HOME/models``::

    v0001/  network.json  model.safetensors  items.json  version.json
    v0002/  ...
    live.json            {"version": "v0002", "since": …, "previous": ["v0001"]}
    experiments.json     A/B tests between versions (streamrec.experiments); a running one pins both

``previous`` is the stack of earlier live versions: ``rollback`` pops it.

A version folder is written under a temporary name and renamed into place,
and ``live.json`` is replaced atomically, so a crash at any point leaves
either the old or the new state, never a half-written version or pointer.
What a crash can leave is repaired on opening and before every write (see
``_recover``): staging and half-deleted folders go, and the statuses in
``version.json`` are made to agree with ``live.json``, which is the truth.
Readers apply the same rule, so they never see two live versions.

>>> import tempfile
>>> registry = Registry(tempfile.mkdtemp())
>>> registry.live() is None
True
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from streamrec.faults import crash_point

VERSION_FILE = "version.json"
ITEMS_FILE = "items.json"
LIVE_FILE = "live.json"
EXPERIMENTS_FILE = "experiments.json"
# What a writer killed mid-write leaves: its staging folder, a version it was deleting, a temporary file.
LEFTOVERS = (
    ".staging-*",
    ".deleting-*",
    f".{LIVE_FILE}.*",
    f".{EXPERIMENTS_FILE}.*",
    f"v[0-9]*/.{VERSION_FILE}.*",
)


@dataclass
class VersionInfo:
    """What the registry knows about one version (``version.json``)."""

    version: str
    created_at: float
    status: str  # candidate | live | rejected | retired
    trained_through_offset: int
    strategy: str = "full"
    parent: str | None = None
    trained_from_offset: int = 0  # an update learned the events in (from, through]
    text_model: str | None = None  # the sentence encoder the item tower read (None: ID-only model)
    metrics: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    update: dict[str, Any] = field(default_factory=dict)  # what moved: trainable/changed weight fractions
    guardrail: dict[str, Any] = field(default_factory=dict)  # candidate vs live on held-out newest events
    tuned: dict[str, Any] = field(default_factory=dict)  # update settings the last fit from scratch chose
    categories: dict[str, Any] = field(default_factory=dict)  # the category head's held-out accuracy
    reranker: dict[str, Any] = field(default_factory=dict)  # the LM reranker's check (models/reranker.py)
    privacy: dict[str, Any] = field(default_factory=dict)  # a private fit's ε spent ({}: not private)
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def learned_through_offset(self) -> int:
        """The newest log offset any of its weights learned from: a shipped LM reranker learns from
        events after ``trained_through_offset`` (the holdout); one recorded before that was noted
        may have read any."""
        if self.reranker.get("enabled"):
            return max(self.trained_through_offset, self.reranker.get("read_through_offset", sys.maxsize))
        return self.trained_through_offset


def _write_json_atomically(path: Path, payload: object) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    with temporary.open("w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _status_by_pointer(info: VersionInfo, live: str | None) -> VersionInfo:
    """``info`` with the status ``live.json`` implies: live iff the pointer names it.

    ``promote`` and ``rollback`` move the pointer first and fix the statuses after, so between the
    two (or after a crash there) a version still marked live that the pointer left is retired.
    """
    if info.version == live:
        info.status = "live"
    elif info.status == "live":
        info.status = "retired"
    return info


class Registry:
    """Versions of the model under one folder; see the module docstring for the layout."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        with self._locked(wait=False):
            pass  # taking the lock repairs a crash's leftovers; a writer holding it repaired them already

    @contextmanager
    def _locked(self, *, wait: bool = True) -> Iterator[bool]:
        """The write lock (it dies with its process); whoever takes it first repairs a crash's leftovers.

        With ``wait=False`` it yields False at once when another writer holds the lock.
        """
        with (self.root / ".lock").open("w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            try:
                self._recover()
                yield True
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _recover(self) -> None:
        """Repair what a writer killed mid-write left; only under the lock.

        Every writer holds the lock for its whole write (``add`` included), so a staging or
        half-deleted folder seen under the lock belongs to a dead process. Statuses on disk are
        rewritten to agree with ``live.json`` (see ``_status_by_pointer``).
        """
        for pattern in LEFTOVERS:
            for path in self.root.glob(pattern):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        live = self.live()
        for stored in self._stored_versions():
            status = stored.status
            info = _status_by_pointer(stored, live)
            if info.status != status:
                if info.status == "retired":
                    info.notes = f"retired on recovery: {LIVE_FILE} names {live}"
                _write_json_atomically(self.root / info.version / VERSION_FILE, info.to_dict())

    def _stored_versions(self) -> list[VersionInfo]:
        """Each version as its ``version.json`` says, status included (readers use ``versions``)."""
        found = []
        for folder in sorted(self.root.glob("v[0-9]*")):
            meta = folder / VERSION_FILE
            if meta.exists():
                found.append(VersionInfo(**json.loads(meta.read_text())))
        return found

    def versions(self) -> list[VersionInfo]:
        live = self.live()
        return [_status_by_pointer(info, live) for info in self._stored_versions()]

    def get(self, version: str) -> VersionInfo:
        meta = self.root / version / VERSION_FILE
        if not meta.exists():
            known = ", ".join(v.version for v in self.versions()) or "none"
            raise KeyError(f"no model version {version!r} (known: {known})")
        return _status_by_pointer(VersionInfo(**json.loads(meta.read_text())), self.live())

    def path(self, version: str) -> Path:
        self.get(version)
        return self.root / version

    def live(self) -> str | None:
        return self._pointer().get("version")

    def _pointer(self) -> dict[str, Any]:
        pointer = self.root / LIVE_FILE
        return json.loads(pointer.read_text()) if pointer.exists() else {}

    def add(self, write: Callable[[Path], None], items: list[str], info: dict[str, Any]) -> VersionInfo:
        """Store a new version: ``write(folder)`` saves the weights; the folder appears atomically.

        The lock is held while the weights are written, so that a staging folder nobody holds the
        lock for is a crashed writer's and can be removed (readers do not wait for it).
        """
        with self._locked():
            staging = self.root / f".staging-{uuid.uuid4().hex}"
            staging.mkdir()
            try:
                write(staging)
                crash_point("add-mid-copy")
                (staging / ITEMS_FILE).write_text(json.dumps(items))
                numbers = [int(v.name[1:]) for v in self.root.glob("v[0-9]*")]
                version = f"v{max(numbers, default=0) + 1:04d}"
                record = VersionInfo(version=version, created_at=time.time(), **info)
                _write_json_atomically(staging / VERSION_FILE, record.to_dict())
                os.rename(staging, self.root / version)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        return record

    def set_status(self, version: str, status: str, notes: str | None = None) -> VersionInfo:
        """Mark a version candidate, rejected or retired; only ``promote`` and ``rollback`` make one live."""
        if status == "live":
            raise ValueError(f"set_status cannot make {version} live: promote it")
        with self._locked():
            return self._set_status(version, status, notes)

    def _set_status(self, version: str, status: str, notes: str | None = None) -> VersionInfo:
        info = self.get(version)
        info.status = status
        if notes is not None:
            info.notes = notes
        _write_json_atomically(self.root / version / VERSION_FILE, info.to_dict())
        return info

    def promote(self, version: str) -> VersionInfo:
        """Make ``version`` live; the previous live version is ``retired`` and can be rolled back to."""
        with self._locked():
            info = self.get(version)
            pointer = self._pointer()
            previous = pointer.get("version")
            stack = [v for v in pointer.get("previous", []) if v != version]
            if previous and previous != version:
                stack.append(previous)
            _write_json_atomically(
                self.root / LIVE_FILE, {"version": version, "since": time.time(), "previous": stack}
            )
            crash_point("promote-after-pointer")
            if previous and previous != version:
                self._set_status(previous, "retired")
            return self._set_status(info.version, "live")

    def rollback_target(self) -> str | None:
        """The version that was live before the current one, if it still exists."""
        stack = [v for v in self._pointer().get("previous", []) if (self.root / v / VERSION_FILE).exists()]
        return stack[-1] if stack else None

    def rollback(self) -> VersionInfo:
        """Make the previous live version live again; the current one is retired with a note."""
        with self._locked():
            pointer = self._pointer()
            current = pointer.get("version")
            stack = [v for v in pointer.get("previous", []) if (self.root / v / VERSION_FILE).exists()]
            if not stack:
                raise LookupError("no earlier live version to roll back to")
            target = stack.pop()
            _write_json_atomically(
                self.root / LIVE_FILE, {"version": target, "since": time.time(), "previous": stack}
            )
            if current:
                self._set_status(current, "retired", notes=f"rolled back to {target}")
            return self._set_status(target, "live")

    def experiments(self) -> list[dict[str, Any]]:
        """Every experiment as stored (:mod:`streamrec.experiments` gives them meaning), oldest first."""
        path = self.root / EXPERIMENTS_FILE
        return json.loads(path.read_text()) if path.exists() else []

    def change_experiments(
        self, change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]
    ) -> list[dict[str, Any]]:
        """Replace the experiments with ``change(current)``, atomically and under the write lock."""
        with self._locked():
            updated = change(self.experiments())
            _write_json_atomically(self.root / EXPERIMENTS_FILE, updated)
            return updated

    def pinned(self) -> set[str]:
        """Versions a running experiment answers with: pruning keeps them."""
        running = [e for e in self.experiments() if e.get("stopped_at") is None]
        return {e[arm] for e in running for arm in ("a", "b")}

    def prune(self, keep: int) -> list[str]:
        """Delete versions older than the newest ``keep``, except the live one, its rollback target and
        the versions of a running experiment.

        The first two are read from ``live.json``, never from statuses, so a crash that left the
        statuses behind the pointer cannot get either deleted; a crash mid-prune only leaves work
        for the next.
        """
        with self._locked():
            protected = {self.live(), self.rollback_target(), *self.pinned()}
            versions = [v.version for v in self.versions()]
            doomed = [v for v in versions[: max(len(versions) - keep, 0)] if v not in protected]
            for version in doomed:
                self._delete(version)
                crash_point("prune-mid-delete")
            return doomed

    def _delete(self, version: str) -> None:
        """Under the lock: the version vanishes at once (a rename), then its files go."""
        trash = self.root / f".deleting-{version}-{uuid.uuid4().hex}"
        os.rename(self.root / version, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def erase(self, versions: list[str]) -> list[str]:
        """Delete these versions for good (weights, items, record): what a forgotten user taught them
        goes with them, and rollback cannot bring them back. The live version cannot be erased."""
        with self._locked():
            live = self.live()
            if live in versions:
                raise ValueError(f"{live} is live: promote a clean version before erasing it")
            erased = [version for version in versions if (self.root / version).exists()]
            for version in erased:
                self._delete(version)
            return erased

    def items(self, version: str) -> list[str]:
        return json.loads((self.path(version) / ITEMS_FILE).read_text())
