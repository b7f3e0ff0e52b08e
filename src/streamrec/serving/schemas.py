"""Request and response bodies of the HTTP API (they also make the OpenAPI page at ``/docs``)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from streamrec.events import MAX_ID_LENGTH
from streamrec.items import MAX_TEXT_LENGTH

MAX_K = 1000


class ScoredItem(BaseModel):
    item_id: str
    score: float
    title: str


class Recommendations(BaseModel):
    """``source`` is ``model`` (sequential model on the user's latest events) or ``trending`` (fallback)."""

    user_id: str | None
    model_version: str
    source: str
    items: list[ScoredItem]


class SearchResults(Recommendations):
    """``source`` is ``search`` (semantic only) or ``personalised`` (re-ranked with the user's history)."""

    query: str


class SimilarItems(BaseModel):
    """``source`` is ``model`` (item-embedding cosine) or ``text`` (items the model has not learned yet)."""

    item_id: str
    model_version: str
    source: str
    items: list[ScoredItem]


class SessionRequest(BaseModel):
    """An anonymous session: the items it touched, oldest first; unknown ids are ignored."""

    model_config = ConfigDict(extra="forbid", strict=True)

    items: list[Annotated[str, Field(max_length=MAX_ID_LENGTH)]] = Field(
        max_length=10_000, examples=[["i12", "i40", "i7"]]
    )
    k: int = Field(10, ge=1, le=MAX_K)
    exclude_seen: bool = True
    category: str | None = Field(None, max_length=MAX_ID_LENGTH)


class ItemBody(BaseModel):
    """Catalogue fields of one item; ``item_id`` comes from the path (if repeated here it must match)."""

    model_config = ConfigDict(extra="forbid")

    item_id: str | None = Field(None, max_length=MAX_ID_LENGTH)
    title: str = Field("", max_length=MAX_TEXT_LENGTH)
    description: str = Field("", max_length=MAX_TEXT_LENGTH)
    category: str = Field("", max_length=MAX_ID_LENGTH)
    attributes: dict[str, Any] | str | None = None
    created_at: float | str | None = Field(None, description="epoch seconds or ISO-8601; default: now")


class ItemUpserted(BaseModel):
    """``recommendable`` is false for a new item under an id-only model: it is scored after retraining."""

    item_id: str
    searchable: bool
    recommendable: bool
    model_version: str


class EventsAccepted(BaseModel):
    """``duplicates`` were already in the log (same ``event_id``); offsets are 0 if nothing was stored."""

    accepted: int
    duplicates: int
    first_offset: int
    last_offset: int


class Health(BaseModel):
    status: str
    model_version: str
    model_loaded_at: float
    trained_through_offset: int
    last_offset: int
    events_since_training: int
    catalogue_items: int


class ModelVersions(BaseModel):
    live: str | None
    serving: str
    versions: list[dict[str, Any]]


class Promotion(BaseModel):
    live: str
    previous: str | None


class Reloaded(BaseModel):
    model_version: str
    catalogue_items: int


class UpdateJob(BaseModel):
    """The update launched by ``POST /admin/update`` (or the last one)."""

    running: bool
    pid: int | None
    started_at: float | None
    strategy: str | None = None
    exit_code: int | None = None
    output: str = ""
