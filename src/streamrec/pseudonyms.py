"""Pseudonymised user ids: a keyed hash replaces each user id before anything is stored.

With ``[privacy] pseudonymise_users = true`` every event's ``user_id`` becomes
``HMAC-SHA256(key, user_id)`` (hex, 32 characters, behind ``p_``) when it is validated, on every
path in (HTTP, files, Kafka, Redis Streams); every lookup by user id (recommend, search,
profile, forget, export, the impressions an answer records) hashes the id it is given the same
way, so a client keeps using its own ids. Without the key the stored ids cannot be turned back,
nor matched to a known id. The key comes from settings (``STREAMREC_PRIVACY__PSEUDONYM_KEY``
best) and is never written to a log or the store; the store keeps a fingerprint of it (a hash of
a constant under the key) so that a home refuses a different key, which would split every
user's history in two.

>>> users = Pseudonymiser("a key of 16+ characters")
>>> users("u42") == users("u42") != users("u43"), users("u42")[:2], len(users("u42"))
(True, 'p_', 34)
>>> users
Pseudonymiser(key=<hidden>)
"""

from __future__ import annotations

import hashlib
import hmac

PREFIX = "p_"
DIGEST_CHARS = 32  # 128 bits of the HMAC: collisions are out of reach for any user count
FINGERPRINT_MESSAGE = b"streamrec: which key pseudonymises this home's users"
MIN_KEY_CHARS = 16  # settings refuse a shorter key (an HMAC key is only as strong as it is long)


class Pseudonymiser:
    """``user id -> p_<keyed hash>``; the same id always gives the same pseudonym under one key."""

    def __init__(self, key: str) -> None:
        self._key = key.encode()

    def __call__(self, user_id: str) -> str:
        digest = hmac.new(self._key, user_id.encode(), hashlib.sha256).hexdigest()
        return PREFIX + digest[:DIGEST_CHARS]

    def fingerprint(self) -> int:
        """Identifies the key without revealing it (60 bits, kept in the store to refuse another key)."""
        return int(hmac.new(self._key, FINGERPRINT_MESSAGE, hashlib.sha256).hexdigest()[:15], 16)

    def __repr__(self) -> str:
        return "Pseudonymiser(key=<hidden>)"


def as_stored(user_id: str) -> str:
    """Identity: the user id as stored when pseudonymisation is off."""
    return user_id
