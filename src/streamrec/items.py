"""The catalogue's item schema, and the one place that turns an item into text.

The text encoder reads :attr:`Item.text`; nothing else in streamrec builds
item text, so what the model sees is defined here and only here.

>>> item = Item("i1", title="Trail running shoes", category="Sport")
>>> item.text
'Trail running shoes. Category: Sport'
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from streamrec.events import MAX_ID_LENGTH, EventValidationError, parse_timestamp

ITEM_FIELDS: tuple[str, ...] = ("item_id", "title", "description", "category", "attributes", "created_at")
MAX_TEXT_LENGTH = 10_000


@dataclass(frozen=True, slots=True)
class Item:
    """A catalogue entry. ``attributes`` is a small JSON object (brand, year, genres…)."""

    item_id: str
    title: str = ""
    description: str = ""
    category: str = ""
    attributes: dict[str, Any] | None = None
    created_at: float | None = None

    @property
    def text(self) -> str:
        """What the text encoder reads: title, category, attributes, then description."""
        parts = [self.title.strip()] if self.title.strip() else []
        if self.category:
            parts.append(f"Category: {self.category}")
        for key, value in (self.attributes or {}).items():
            parts.append(f"{key}: {attribute_text(value)}")
        if self.description.strip():
            parts.append(self.description.strip())
        return ". ".join(parts) if parts else self.item_id


def attribute_text(value: Any) -> str:
    """How an attribute's value reads in :attr:`Item.text` (a list: its entries, comma-separated)."""
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


def without_category(item: Item) -> Item:
    """``item`` with its category removed, also where an attribute repeats it (MovieLens's genres
    are both): what a model that predicts the category may read."""
    kept = {k: v for k, v in (item.attributes or {}).items() if attribute_text(v) != item.category}
    return replace(item, category="", attributes=kept or None)


def validate_item(record: Any, *, where: str = "") -> Item:
    """Check one raw catalogue record; errors name the record and the field."""
    if not isinstance(record, Mapping):
        raise EventValidationError(where, None, f"expected an object, got {type(record).__name__}")
    unknown = [key for key in record if key not in ITEM_FIELDS]
    if unknown:
        raise EventValidationError(
            where, str(unknown[0]), f"is not an item field (known: {', '.join(ITEM_FIELDS)})"
        )
    raw_id = record.get("item_id")
    if raw_id is None or (isinstance(raw_id, str) and not raw_id.strip()):
        raise EventValidationError(where, "item_id", "is required")
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
        raise EventValidationError(where, "item_id", f"must be a string, got {type(raw_id).__name__}")
    item_id = str(raw_id).strip()
    if len(item_id) > MAX_ID_LENGTH:
        raise EventValidationError(where, "item_id", f"is longer than {MAX_ID_LENGTH} characters")
    texts = {}
    for name in ("title", "description", "category"):
        value = record.get(name)
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise EventValidationError(where, name, f"must be a string, got {type(value).__name__}")
        if len(value) > MAX_TEXT_LENGTH:
            raise EventValidationError(where, name, f"is longer than {MAX_TEXT_LENGTH} characters")
        texts[name] = value
    attributes = record.get("attributes")
    if isinstance(attributes, str):
        try:
            attributes = json.loads(attributes) if attributes.strip() else None
        except json.JSONDecodeError as error:
            raise EventValidationError(where, "attributes", f"is not valid JSON ({error.msg})") from None
    if attributes is not None and not isinstance(attributes, dict):
        raise EventValidationError(
            where, "attributes", f"must be a JSON object, got {type(attributes).__name__}"
        )
    created = record.get("created_at")
    if created is None or created == "":
        created_at = time.time()
    else:
        try:
            created_at = parse_timestamp(created)
        except ValueError as error:
            raise EventValidationError(where, "created_at", str(error)) from None
    return Item(
        item_id, texts["title"], texts["description"], texts["category"], attributes or None, created_at
    )
