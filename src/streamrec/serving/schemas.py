"""Request and response bodies of the HTTP API (they also make the OpenAPI page at ``/docs``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from streamrec.events import MAX_EPOCH_SECONDS, MAX_ID_LENGTH
from streamrec.items import MAX_TEXT_LENGTH


def _not_text(value: Any) -> Any:
    """A JSON integer field takes numbers only (``10`` or ``10.0``), never ``"10"`` or ``true``."""
    if isinstance(value, str | bool):
        raise ValueError("must be a JSON number")
    return value


JsonInt = Annotated[int, Field(strict=False), BeforeValidator(_not_text)]
# Something besides whitespace, as Python's str.strip() knows it (regex dialects disagree on \s).
WHITESPACE = "\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
NOT_BLANK = f"[^{WHITESPACE}]"
# An id in a URL path: not blank, and no "/" (the router splits paths there before it decodes them).
PATH_ID = f"^[^/]*[^/{WHITESPACE}][^/]*$"
# An identifier: a string with something besides whitespace, or an integer (both as the log stores them).
Identifier = (
    Annotated[str, StringConstraints(pattern=NOT_BLANK, max_length=MAX_ID_LENGTH)]
    | Annotated[JsonInt, Field(ge=-(10**100), le=10**100)]
)
# ISO-8601 date-times the log can place: 1971–4999, days the calendar always has, optional zone.
ISO_TIME = (
    r"^(197[1-9]|19[89][0-9]|[2-4][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])"
    r"([T ]([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?"
    r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])?)?$"
)

Time = (
    Annotated[float, Field(ge=0, le=MAX_EPOCH_SECONDS)]
    | Annotated[str, StringConstraints(pattern=ISO_TIME)]
    | None
)


class EventIn(BaseModel):
    """One event. ``event_type``: one of the server's types; ``timestamp``: epoch seconds or ISO-8601
    (absent: arrival time); ``event_id``: sending the same id again stores it once."""

    model_config = ConfigDict(extra="forbid", strict=True)

    user_id: Identifier
    item_id: Identifier
    event_type: str
    timestamp: Time = None
    value: float | None = None
    event_id: Identifier | None = None
    context: dict[str, Any] | None = Field(None, description="a small JSON object (at most 4 KB)")
    request_id: Identifier | None = Field(
        None, description="the recommendation or search answer this event responds to (kept in the context)"
    )


MAX_K = 1000
DIVERSITY = "0: the model's ranking; up to 1: more varied items (maximal marginal relevance)"


class Reason(BaseModel):
    """A history item behind a recommendation, and how close the two are (cosine of item vectors)."""

    item_id: str
    title: str
    similarity: float


class ScoredItem(BaseModel):
    """``because``: with ``explain=true``, the user's history items closest to this one."""

    item_id: str
    score: float
    title: str
    because: list[Reason] | None = None


class Recommendations(BaseModel):
    """``source`` is ``model`` (sequential model on the user's latest events) or ``trending`` (fallback).
    ``request_id`` names this answer: an event that sends it back is attributed to what was shown.
    ``arm`` is the experiment arm (``EXPERIMENT/a`` or ``/b``) that answered, while one runs;
    ``EXPERIMENT/ab`` when both versions' lists were interleaved (``model_version`` ``a+b``)."""

    request_id: str
    arm: str | None = None
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

    model_config = ConfigDict(extra="forbid")

    items: list[Annotated[str, Field(max_length=MAX_ID_LENGTH)]] = Field(
        max_length=10_000, examples=[["i12", "i40", "i7"]]
    )
    k: JsonInt = Field(10, ge=1, le=MAX_K)
    exclude_seen: Annotated[bool, Field(strict=True)] = True
    category: str | None = Field(None, max_length=MAX_ID_LENGTH)
    diversity: Annotated[float, Field(strict=True)] = Field(0.0, ge=0, le=1, description=DIVERSITY)
    explain: Annotated[bool, Field(strict=True)] = False


class CategoryShare(BaseModel):
    category: str
    share: float


class ProfileItem(BaseModel):
    item_id: str
    title: str
    category: str | None
    event_type: str
    timestamp: float


class Taste(BaseModel):
    """The live model's view of the user: categories among its top 50 for them, and their state's length."""

    model_version: str
    categories: list[CategoryShare]
    state_norm: float | None


class Profile(BaseModel):
    """What a user did (their newest ``events_read`` events) and where the model puts them."""

    user_id: str
    events_read: int
    first_seen: float
    last_seen: float
    event_types: dict[str, int]
    categories: list[CategoryShare]
    recent_items: list[ProfileItem]
    taste: Taste


class ItemBody(BaseModel):
    """Catalogue fields of one item; its id is the path's."""

    model_config = ConfigDict(extra="forbid", strict=True)

    title: str = Field("", max_length=MAX_TEXT_LENGTH)
    description: str = Field("", max_length=MAX_TEXT_LENGTH)
    category: str = Field("", max_length=MAX_ID_LENGTH)
    attributes: dict[str, Any] | None = Field(None, description="a small JSON object (brand, year…)")
    created_at: Time = Field(None, description="epoch seconds or ISO-8601; default: now")


class ItemUpserted(BaseModel):
    """``recommendable`` is false for a new item under an id-only model: it is scored after retraining.

    An item sent without a category gets the live version's guess when it is at least 50 % likely
    (``category_guessed``); ``category_probability`` is the guess's probability either way, null
    when no guess was made (a category was sent, or the version has no category head).
    """

    item_id: str
    searchable: bool
    recommendable: bool
    model_version: str
    category: str
    category_guessed: bool
    category_probability: float | None


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


class Forgotten(BaseModel):
    """A forget request as recorded: counts and the span of offsets, never the user id nor the data."""

    request_id: str
    timestamp: float
    requested_by: str
    events: int
    impressions: int
    first_offset: int = Field(description="0 when the log held no event of the user")
    last_offset: int
    versions: list[str] = Field(description="model versions trained on any of the user's events")


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


class ExperimentStart(BaseModel):
    """An A/B test: arm ``b`` (a ``share`` of users) sees version ``b``, the rest version ``a``."""

    model_config = ConfigDict(extra="forbid")

    a: str | None = Field(None, max_length=MAX_ID_LENGTH, description="default: the live version")
    b: str = Field(max_length=MAX_ID_LENGTH)
    share: float = Field(0.5, gt=0, lt=1)
    metric: Literal["clicks", "conversions", "hits"] = "clicks"
    alpha: float = Field(0.05, gt=0, lt=1)
    method: Literal["split", "interleave"] = Field(
        "split", description="split: users in two arms; interleave: both versions in each answer (team draft)"
    )


class ExperimentStop(BaseModel):
    """``promote``: the significant winner (if there is one), an arm's version, or nothing."""

    model_config = ConfigDict(extra="forbid")

    promote: Literal["winner", "a", "b", "none"] = "none"


class ExperimentInfo(BaseModel):
    """A started experiment (its assignment key stays private)."""

    id: str
    a: str
    b: str
    share: float
    started_at: float
    metric: str
    alpha: float
    method: str
    stopped_at: float | None
    result: dict[str, Any] | None


class Judgement(BaseModel):
    """Per-arm online figures, ``b - a`` on the metric, the sequential p-value and the decision
    (``a`` or ``b``: that arm is significantly better; else ``undecided``). Interleaved: per arm
    its team's ``wins`` (share of answers with a credited event), and ``difference`` the
    share b won minus the share a won."""

    experiment: str
    method: str
    metric: str
    alpha: float
    running: bool
    arms: dict[str, dict[str, Any]]
    difference: float
    difference_ci95: list[float] | None
    p_value: float
    p_value_fixed_horizon: float
    decision: str
    promoted: str | None = None
