"""A home: the folder one deployment owns, and the handles to what is in it.

It holds the store (``streamrec.sqlite``, or the ``store`` setting's URL), the model registry
(``models/``), the text-embedding cache and ``streamrec.toml``; one update runs
in it at a time. Everything that works on a home (the CLI, the server, the
worker, updates) opens it through here, so the layout is written down once.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from streamrec.config import Settings, load_settings
from streamrec.pseudonyms import Pseudonymiser
from streamrec.registry import Registry
from streamrec.store import Store, open_store
from streamrec.text import EmbeddingCache, TextEncoder

MODELS_DIR = "models"
TEXT_CACHE_FILE = "text-cache.sqlite"
LOCK_FILE = ".update.lock"
PSEUDONYM_KEY = "pseudonym_key"  # store meta: the fingerprint of the key user ids are hashed with


class UpdateInProgress(RuntimeError):
    """Another process is updating this home right now."""


@dataclass
class Home:
    """One deployment's folder: its settings, store, registry, text encoder and update lock."""

    path: Path
    settings: Settings

    @classmethod
    def open(cls, path: str | Path) -> Home:
        """The home at ``path`` with its ``streamrec.toml`` (and ``STREAMREC_*`` variables) read."""
        return cls(Path(path), load_settings(path))

    def open_store(self, *, synchronous: str | None = None) -> Store:
        """The store the settings name (``store = "postgresql://…"``), else the home's SQLite file."""
        self.path.mkdir(parents=True, exist_ok=True)  # the registry lives here whatever the store
        store = open_store(
            self.settings.store or self.path, synchronous=synchronous or self.settings.synchronous
        )
        try:
            _check_pseudonym_key(store, self.settings.privacy.user_key())
        except ValueError:
            store.close()
            raise
        return store

    @property
    def models(self) -> Path:
        return self.path / MODELS_DIR

    @property
    def registry(self) -> Registry:
        return Registry(self.models)

    def has_registry(self) -> bool:
        return self.models.exists()

    def text_encoder(self, model: str, device: str | None = None) -> TextEncoder:
        """The encoder with its embedding cache in the home, so unchanged texts are never re-encoded."""
        return TextEncoder(model, device=device, cache=EmbeddingCache(self.path / TEXT_CACHE_FILE))

    @contextmanager
    def update_lock(self) -> Iterator[None]:
        """One update per home at a time; the lock dies with its process, so a crash never wedges it."""
        lock = self.models / LOCK_FILE
        lock.parent.mkdir(parents=True, exist_ok=True)
        with lock.open("w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UpdateInProgress(f"an update of {self.path} is already running") from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _check_pseudonym_key(store: Store, user_key: Callable[[str], str]) -> None:
    """Refuse settings that would store a user's new events under another id than their old ones:
    pseudonymisation switched on over plain ids, off over pseudonyms, or another key."""
    stored = store.database.counter(PSEUDONYM_KEY)
    if not isinstance(user_key, Pseudonymiser):
        if stored:
            raise ValueError(
                "privacy.pseudonymise_users: this store's user ids are pseudonymised;"
                " set it to true, with the same pseudonym_key"
            )
        return
    if stored == 0:
        with store.transaction() as conn:
            if store.database.counter(PSEUDONYM_KEY) == 0:
                if store.log.last_offset() > 0:
                    raise ValueError(
                        "privacy.pseudonymise_users: the log already holds events under plain user ids;"
                        " pseudonymisation is chosen before the first event (a new home or store)"
                    )
                store.database.add_to_counter(conn, PSEUDONYM_KEY, user_key.fingerprint())
        stored = store.database.counter(PSEUDONYM_KEY)
    if stored != user_key.fingerprint():
        raise ValueError(
            "privacy.pseudonym_key: not the key this store's user ids were pseudonymised with"
            " (another key would split every user's history in two)"
        )
