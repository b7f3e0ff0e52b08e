"""Who may call what, how often and how much: API keys by role, a rate limit per client, a body limit.

Three keys, each from the server's environment: ``STREAMREC_API_KEY`` (admin: every
endpoint), ``STREAMREC_WRITE_KEY`` (writes and reads) and ``STREAMREC_READ_KEY``
(reads; while it is unset, reads are open). Writes need the write or admin key
unless the operator opens them (``server.open_writes``, logged at start), so a
server started without thought does not take anyone's events. A key goes in the
``X-API-Key`` header and is compared in constant time.

``server.rate_limit`` caps requests per client — its key when it sends one, else
its address — with the ``limits`` library's moving window, answering 429 with
``Retry-After``. The window is kept in this process's memory.

:class:`BodyLimit` refuses a body over ``server.max_body_bytes`` with 413 as it
is read: at once when its Content-Length says so, else as soon as the bytes
received pass the limit, so an oversized request never sits in memory whole.
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import HTTPException, Request, Security
from fastapi.security import APIKeyHeader
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamrec.config import ServerSettings

ADMIN_KEY_ENV = "STREAMREC_API_KEY"
WRITE_KEY_ENV = "STREAMREC_WRITE_KEY"
READ_KEY_ENV = "STREAMREC_READ_KEY"

Role = Literal["read", "write", "admin"]
RANK: dict[Role, int] = {"read": 0, "write": 1, "admin": 2}

api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="a read, write or admin key of the server"
)


@dataclass(frozen=True)
class Keys:
    """The keys a server accepts, by role (None: not configured)."""

    admin: str | None = None
    write: str | None = None
    read: str | None = None

    @classmethod
    def from_env(cls, admin: str | None = None, write: str | None = None, read: str | None = None) -> Keys:
        """Keys given here, else from the environment; empty strings count as unset."""
        return cls(
            admin or os.environ.get(ADMIN_KEY_ENV) or None,
            write or os.environ.get(WRITE_KEY_ENV) or None,
            read or os.environ.get(READ_KEY_ENV) or None,
        )

    def role_of(self, given: str) -> Role | None:
        """The highest role ``given`` opens, None for a wrong key (every configured key is compared)."""
        found: Role | None = None
        for role in ("read", "write", "admin"):
            expected = getattr(self, role)
            if expected is not None and secrets.compare_digest(given.encode(), expected.encode()):
                found = role
        return found

    def configured(self, needed: Role) -> bool:
        """Whether any key opens ``needed``."""
        return any(getattr(self, role) for role in RANK if RANK[role] >= RANK[needed])


class Access:
    """The server's keys, what is open without one, and the rate limiter."""

    def __init__(self, keys: Keys, settings: ServerSettings) -> None:
        self.keys = keys
        self.open_writes = settings.open_writes
        self.rates: list[RateLimitItem] = parse_many(settings.rate_limit) if settings.rate_limit else []
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    def is_open(self, needed: Role) -> bool:
        if needed == "read":
            return self.keys.read is None
        return needed == "write" and self.open_writes

    def check(self, needed: Role, given: str | None) -> None:
        """Raise 401/403 unless ``given`` opens ``needed`` (or it is open to all)."""
        if self.is_open(needed):
            return
        if given is None:
            hint = "" if self.keys.configured(needed) else f"; this server has no {needed} key configured"
            if needed == "write" and not self.open_writes:
                hint += f" (set {WRITE_KEY_ENV}, or server.open_writes = true to take writes from anyone)"
            raise _unauthorized(f"this endpoint needs an X-API-Key with {needed} access{hint}")
        if not self.keys.configured(needed):
            env = ADMIN_KEY_ENV if needed == "admin" else WRITE_KEY_ENV
            raise HTTPException(403, f"{needed} access is disabled: no key configured (set {env})")
        role = self.keys.role_of(given)
        if role is None or RANK[role] < RANK[needed]:
            raise _unauthorized(f"the X-API-Key given does not have {needed} access")

    def limit(self, request: Request, given: str | None) -> None:
        """Count the request against its client's rate; raise 429 with Retry-After once over it."""
        if not self.rates:
            return
        if given is not None:
            client = "key:" + hashlib.sha256(given.encode()).hexdigest()[:16]
        else:
            client = "addr:" + (request.client.host if request.client else "unknown")
        for rate in self.rates:
            if not self.limiter.hit(rate, client):
                reset = self.limiter.get_window_stats(rate, client).reset_time
                wait = max(1, math.ceil(reset - time.time()))
                raise HTTPException(
                    429,
                    f"over the rate limit of {rate} for this client; retry in {wait} s",
                    headers={"Retry-After": str(wait)},
                )


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "X-API-Key"})


def require(needed: Role) -> Callable[..., Awaitable[None]]:
    """A dependency: the caller's key must open ``needed``, and the caller must be within its rate."""

    async def check(request: Request, key: Annotated[str | None, Security(api_key_header)]) -> None:
        access: Access = request.app.state.access
        access.check(needed, key)
        access.limit(request, key)

    return check


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes``, before it is read or as it is read."""

    def __init__(self, app: ASGIApp, max_bytes: int, too_large: Callable[[], ASGIApp]) -> None:
        self.app, self.max_bytes, self.too_large = app, max_bytes, too_large

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self.too_large()(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413)  # rendered as a problem by the app's handler
            return message

        await self.app(scope, counted, send)
