"""Every validation error path names the record, the field and the problem."""

import pytest

from streamrec.events import EventSchema, EventValidationError, parse_timestamp
from streamrec.items import Item, validate_item

SCHEMA = EventSchema()
GOOD = {"user_id": "u1", "item_id": "i1", "event_type": "click", "timestamp": 1_700_000_000}


def test_valid_event_round_trip() -> None:
    event = SCHEMA.validate({**GOOD, "value": "4.5", "event_id": "e-1", "context": {"page": "home"}})
    assert (event.user_id, event.item_id, event.event_type) == ("u1", "i1", "click")
    assert event.timestamp == 1_700_000_000.0
    assert event.value == 4.5
    assert event.event_id == "e-1"
    assert event.context == {"page": "home"}


def test_a_request_id_top_level_or_in_the_context_attributes_the_event() -> None:
    top = SCHEMA.validate({**GOOD, "request_id": "r9", "context": {"page": "home"}})
    assert top.request_id == "r9" and top.context == {"page": "home", "request_id": "r9"}
    assert SCHEMA.validate({**GOOD, "context": {"request_id": "r9"}}).request_id == "r9"
    assert SCHEMA.validate(GOOD).request_id is None


def test_integer_ids_become_strings() -> None:
    event = SCHEMA.validate({**GOOD, "user_id": 42, "item_id": 7})
    assert (event.user_id, event.item_id) == ("42", "7")


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        ("2024-05-01T12:00:00Z", 1_714_564_800.0),
        ("2024-05-01T14:00:00+02:00", 1_714_564_800.0),
        ("2024-05-01T12:00:00", 1_714_564_800.0),
        ("1714564800", 1_714_564_800.0),
        (1714564800.5, 1_714_564_800.5),
    ],
)
def test_timestamp_forms(timestamp: object, expected: float) -> None:
    assert parse_timestamp(timestamp) == expected


def test_missing_timestamp_takes_arrival_time() -> None:
    record = {k: v for k, v in GOOD.items() if k != "timestamp"}
    assert SCHEMA.validate(record, arrival_time=123.0).timestamp == 123.0


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        ({"user_id": None}, "user_id", "is required"),
        ({"user_id": ""}, "user_id", "is required"),
        ({"user_id": "   "}, "user_id", "must not be blank"),
        ({"user_id": ["a"]}, "user_id", "must be a string"),
        ({"user_id": True}, "user_id", "must be a string"),
        ({"user_id": "x" * 300}, "user_id", "longer than 256"),
        ({"item_id": None}, "item_id", "is required"),
        ({"item_id": 1.5}, "item_id", "must be a string"),
        ({"event_type": None}, "event_type", "is required"),
        ({"event_type": "teleport"}, "event_type", "unknown type 'teleport'"),
        ({"timestamp": "yesterday"}, "timestamp", "expected epoch seconds or an ISO-8601 string"),
        ({"timestamp": -5}, "timestamp", "non-negative"),
        ({"timestamp": float("nan")}, "timestamp", "non-negative finite"),
        ({"timestamp": 1_700_000_000_000}, "timestamp", "milliseconds"),
        ({"timestamp": True}, "timestamp", "expected epoch seconds"),
        ({"timestamp": [1]}, "timestamp", "got list"),
        ({"value": "lots"}, "value", "must be a number"),
        ({"value": True}, "value", "must be a number"),
        ({"value": float("inf")}, "value", "must be finite"),
        ({"event_id": {"a": 1}}, "event_id", "must be a string"),
        ({"context": "[1, 2]"}, "context", "must be a JSON object"),
        ({"context": "{oops"}, "context", "is not valid JSON"),
        ({"context": ["a"]}, "context", "must be a JSON object"),
        ({"context": {"blob": "x" * 5000}}, "context", "larger than 4096 bytes"),
        ({"request_id": ["r1"]}, "request_id", "must be a string"),
        ({"request_id": "  "}, "request_id", "must not be blank"),
        ({"context": {"request_id": 7}}, "context.request_id", "must be a string"),
        ({"colour": "red"}, "colour", "is not an event field"),
    ],
)
def test_each_rejection_names_record_field_and_problem(change: dict, field: str, problem: str) -> None:
    with pytest.raises(EventValidationError) as raised:
        SCHEMA.validate({**GOOD, **change}, where="events.jsonl line 7")
    error = raised.value
    assert error.where == "events.jsonl line 7"
    assert error.field == field
    assert problem in error.problem
    assert str(error).startswith(f"events.jsonl line 7: field '{field}': ")


def test_non_object_record() -> None:
    with pytest.raises(EventValidationError, match="line 2: expected an object, got list"):
        SCHEMA.validate([1, 2], where="line 2")


def test_configured_event_types_and_unknown_fields() -> None:
    schema = EventSchema(("view", "wishlist"), allow_unknown_fields=True)
    assert schema.validate({**GOOD, "event_type": "wishlist", "colour": "red"}).event_type == "wishlist"
    with pytest.raises(EventValidationError, match="allowed: view, wishlist"):
        schema.validate(GOOD)


def test_item_validation_and_text() -> None:
    item = validate_item(
        {"item_id": 5, "title": "Space Opera", "category": "Film", "attributes": '{"year": 1977}'}, where="x"
    )
    assert item == Item("5", "Space Opera", "", "Film", {"year": 1977}, item.created_at)
    assert item.text == "Space Opera. Category: Film. year: 1977"
    assert Item("9").text == "9"


@pytest.mark.parametrize(
    ("record", "field", "problem"),
    [
        ({"title": "no id"}, "item_id", "is required"),
        ({"item_id": "a", "title": 5}, "title", "must be a string"),
        ({"item_id": "a", "attributes": "[1]"}, "attributes", "must be a JSON object"),
        ({"item_id": "a", "attributes": "{bad"}, "attributes", "is not valid JSON"),
        ({"item_id": "a", "created_at": "soon"}, "created_at", "expected epoch seconds"),
        ({"item_id": "a", "price": 3}, "price", "is not an item field"),
        ({"item_id": "a", "description": "x" * 10_001}, "description", "longer than"),
    ],
)
def test_item_rejections(record: dict, field: str, problem: str) -> None:
    with pytest.raises(EventValidationError) as raised:
        validate_item(record, where="items.jsonl line 3")
    assert raised.value.field == field
    assert problem in raised.value.problem
    assert raised.value.where == "items.jsonl line 3"
