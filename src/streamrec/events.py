"""The event schema and its validation.

An event says that a user did something with an item at some time. Every
event that enters streamrec — over HTTP, from a file, from a stream engine —
passes through :func:`validate_event`, so every rejection reads the same way:
which record, which field, what is wrong with it.

>>> schema = EventSchema()
>>> event = schema.validate({"user_id": "u1", "item_id": "i9", "event_type": "click",
...                          "timestamp": "2024-05-01T12:00:00Z"})
>>> event.timestamp
1714564800.0
>>> schema.validate({"user_id": "u1", "event_type": "click"}, where="line 3")
Traceback (most recent call last):
...
streamrec.events.EventValidationError: line 3: field 'item_id': is required
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streamrec.pseudonyms import as_stored

DEFAULT_EVENT_TYPES: tuple[str, ...] = ("view", "click", "add_to_cart", "purchase", "rating")
FIELDS: tuple[str, ...] = (
    "user_id",
    "item_id",
    "event_type",
    "timestamp",
    "value",
    "event_id",
    "context",
    "request_id",
)
REQUEST_ID = "request_id"  # the answer an event responds to, kept in its context (attribution)
MAX_ID_LENGTH = 256
EXCERPT = 80  # characters of a rejected value an error message quotes at most
MAX_CONTEXT_BYTES = 4096
# Epoch seconds beyond this are almost surely milliseconds (year 5138 otherwise).
MAX_EPOCH_SECONDS = 1e11


def excerpt(value: object) -> str:
    """``repr(value)``, cut to :data:`EXCERPT` characters: an error never echoes a huge input back."""
    text = repr(value)
    return text if len(text) <= EXCERPT else f"{text[: EXCERPT - 1]}…"


class EventValidationError(ValueError):
    """A record that is not a valid event; names the record, the field and the problem."""

    def __init__(self, where: str, field_name: str | None, problem: str) -> None:
        self.where = where
        self.field = field_name
        self.problem = problem
        prefix = f"{where}: " if where else ""
        location = f"field '{field_name}': " if field_name else ""
        super().__init__(f"{prefix}{location}{problem}")

    def as_dict(self) -> dict[str, str | None]:
        return {"record": self.where, "field": self.field, "problem": self.problem}


@dataclass(frozen=True, slots=True)
class Event:
    """One validated user–item event. ``timestamp`` is epoch seconds (UTC)."""

    user_id: str
    item_id: str
    event_type: str
    timestamp: float
    value: float | None = None
    event_id: str | None = None
    context: dict[str, Any] | None = None

    @property
    def request_id(self) -> str | None:
        """The answer (``request_id`` of a recommendation or search) this event responds to, if any."""
        return self.context.get(REQUEST_ID) if self.context else None


def parse_timestamp(raw: Any) -> float:
    """Epoch seconds from a number, a numeric string or an ISO-8601 string.

    Raises ``ValueError`` with a human message when ``raw`` is none of these.
    """
    if isinstance(raw, bool):
        raise ValueError(f"expected epoch seconds or an ISO-8601 string, got {excerpt(raw)}")
    if isinstance(raw, int | float):
        seconds = float(raw)
    elif isinstance(raw, str):
        text = raw.strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(text.replace("Z", "+00:00", 1))
            except ValueError:
                raise ValueError(
                    f"expected epoch seconds or an ISO-8601 string, got {excerpt(raw)}"
                ) from None
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            seconds = parsed.timestamp()
    else:
        raise ValueError(f"expected epoch seconds or an ISO-8601 string, got {type(raw).__name__}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"must be a non-negative finite time, got {excerpt(raw)}")
    if seconds > MAX_EPOCH_SECONDS:
        raise ValueError(f"{excerpt(raw)} is too large for epoch seconds (milliseconds? divide by 1000)")
    return seconds


def _identifier(record: Mapping[str, Any], name: str, where: str, *, required: bool) -> str | None:
    raw = record.get(name)
    if raw is None or raw == "":
        if required:
            raise EventValidationError(where, name, "is required")
        return None
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise EventValidationError(where, name, f"must be a string (or an integer), got {type(raw).__name__}")
    text = str(raw).strip()
    if not text:
        raise EventValidationError(where, name, "must not be blank")
    if len(text) > MAX_ID_LENGTH:
        raise EventValidationError(where, name, f"is longer than {MAX_ID_LENGTH} characters")
    return text


@dataclass(frozen=True)
class EventSchema:
    """What counts as a valid event, and what of it is kept.

    ``event_types`` extends the defaults with names a deployment configures
    (for instance ``"wishlist"``); ``allow_unknown_fields`` lets files carry
    extra columns that streamrec ignores. ``user_key`` turns a user id into what
    is stored (a pseudonym, :mod:`streamrec.pseudonyms`); ``context_fields``, when
    set, are the only context keys kept (besides ``request_id``).
    """

    event_types: tuple[str, ...] = DEFAULT_EVENT_TYPES
    allow_unknown_fields: bool = False
    user_key: Callable[[str], str] = as_stored
    context_fields: tuple[str, ...] | None = None
    _types: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_types", frozenset(self.event_types))

    def validate(self, record: Any, *, where: str = "", arrival_time: float | None = None) -> Event:
        """Check one raw record and return the :class:`Event` it describes.

        ``arrival_time`` stands in for a missing timestamp (default: now).
        """
        if not isinstance(record, Mapping):
            raise EventValidationError(where, None, f"expected an object, got {type(record).__name__}")
        if not self.allow_unknown_fields:
            unknown = [key for key in record if key not in FIELDS]
            if unknown:
                raise EventValidationError(
                    where, str(unknown[0]), f"is not an event field (known: {', '.join(FIELDS)})"
                )
        user_id = _identifier(record, "user_id", where, required=True)
        item_id = _identifier(record, "item_id", where, required=True)
        event_type = record.get("event_type")
        if event_type is None or event_type == "":
            raise EventValidationError(where, "event_type", "is required")
        if event_type not in self._types:
            raise EventValidationError(
                where,
                "event_type",
                f"unknown type {excerpt(event_type)} (allowed: {', '.join(self.event_types)})",
            )
        raw_time = record.get("timestamp")
        if raw_time is None or raw_time == "":
            timestamp = time.time() if arrival_time is None else arrival_time
        else:
            try:
                timestamp = parse_timestamp(raw_time)
            except ValueError as error:
                raise EventValidationError(where, "timestamp", str(error)) from None
        value = record.get("value")
        if value is not None and value != "":
            if isinstance(value, bool):
                raise EventValidationError(where, "value", "must be a number, got bool")
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise EventValidationError(
                    where, "value", f"must be a number, got {excerpt(value)}"
                ) from None
            if not math.isfinite(value):
                raise EventValidationError(where, "value", f"must be finite, got {excerpt(value)}")
        else:
            value = None
        event_id = _identifier(record, "event_id", where, required=False)
        context = record.get("context")
        if context is not None:
            if isinstance(context, str):
                try:
                    context = json.loads(context) if context.strip() else None
                except json.JSONDecodeError as error:
                    raise EventValidationError(where, "context", f"is not valid JSON ({error.msg})") from None
            if context is not None and not isinstance(context, dict):
                raise EventValidationError(
                    where, "context", f"must be a JSON object, got {type(context).__name__}"
                )
            if context and self.context_fields is not None:
                context = {
                    key: value
                    for key, value in context.items()
                    if key in self.context_fields or key == REQUEST_ID
                }
        request_id = _identifier(record, REQUEST_ID, where, required=False)
        if request_id is not None:  # top level or in the context: stored in the context
            context = {**(context or {}), REQUEST_ID: request_id}
        elif context and REQUEST_ID in context and not isinstance(context[REQUEST_ID], str):
            raise EventValidationError(where, f"context.{REQUEST_ID}", "must be a string")
        if context is not None and len(json.dumps(context)) > MAX_CONTEXT_BYTES:
            raise EventValidationError(where, "context", f"is larger than {MAX_CONTEXT_BYTES} bytes")
        return Event(self.user_key(user_id), item_id, event_type, timestamp, value, event_id, context or None)
