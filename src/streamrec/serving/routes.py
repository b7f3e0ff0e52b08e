"""The HTTP endpoints, as routers: public reads, catalogue/event writes, and admin.

Handlers that run the model or touch SQLite are plain ``def``: FastAPI runs
them in its thread pool, so a PyTorch forward never blocks the event loop.
HTTP errors are raised here and only here; the runtime raises plain Python
errors (``KeyError``, ``LookupError``).
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, Security
from fastapi.responses import PlainTextResponse
from fastapi.security import APIKeyHeader
from prometheus_client import CONTENT_TYPE_LATEST

from streamrec.events import EventSchema, EventValidationError
from streamrec.home import UpdateInProgress
from streamrec.items import validate_item
from streamrec.serving.metrics import ServingMetrics
from streamrec.serving.runtime import Runtime
from streamrec.serving.schemas import (
    MAX_K,
    EventsAccepted,
    Health,
    ItemBody,
    ItemUpserted,
    ModelVersions,
    Problems,
    Promotion,
    Recommendations,
    Reloaded,
    SearchResults,
    SessionRequest,
    SimilarItems,
    UpdateJob,
)

API_KEY_ENV = "STREAMREC_API_KEY"
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the server's admin API key")


def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def get_metrics(request: Request) -> ServingMetrics:
    return request.app.state.metrics


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
K = Annotated[int, Query(ge=1, le=MAX_K, description="how many items")]


def _check_key(request: Request, given: str | None) -> None:
    expected: str | None = request.app.state.api_key
    if not expected:
        raise HTTPException(
            403,
            f"admin endpoints are disabled: no API key is configured (set {API_KEY_ENV} in the server's"
            " environment, or pass --api-key to `streamrec serve`)",
        )
    if given is None or not secrets.compare_digest(given.encode(), expected.encode()):
        raise HTTPException(
            401, "missing or wrong X-API-Key header", headers={"WWW-Authenticate": "X-API-Key"}
        )


async def require_admin(request: Request, key: Annotated[str | None, Security(api_key_header)]) -> None:
    _check_key(request, key)


async def require_writer(request: Request, key: Annotated[str | None, Security(api_key_header)]) -> None:
    """Writes are open unless the app was created with ``protect_writes=True``."""
    if request.app.state.protect_writes:
        _check_key(request, key)


public = APIRouter()
writes = APIRouter(dependencies=[Depends(require_writer)])
admin = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


# ----- public reads -----


@public.get("/recommend/{user_id}", response_model=Recommendations, tags=["recommend"])
def recommend_user(
    user_id: str,
    runtime: RuntimeDep,
    k: K = 10,
    exclude_seen: bool = True,
    category: Annotated[str | None, Query(description="only items of this catalogue category")] = None,
) -> dict[str, Any]:
    """Top-k for a user from their latest events; users without history get trending items."""
    return runtime.recommend(user_id, k, exclude_seen=exclude_seen, category=category or None)


@public.post("/recommend", response_model=Recommendations, tags=["recommend"])
def recommend_session(session: SessionRequest, runtime: RuntimeDep) -> dict[str, Any]:
    """Top-k for an anonymous session's items; with no known item, trending items."""
    return runtime.recommend_session(
        session.items, session.k, exclude_seen=session.exclude_seen, category=session.category or None
    )


@public.get(
    "/items/{item_id}/similar",
    response_model=SimilarItems,
    responses={404: {"description": "unknown item"}},
    tags=["items"],
)
def similar_items(item_id: str, runtime: RuntimeDep, k: K = 10) -> dict[str, Any]:
    """Nearest items by cosine of the live model's item embeddings."""
    try:
        return runtime.similar(item_id, k)
    except KeyError as error:
        raise HTTPException(404, error.args[0]) from None


@public.get("/search", response_model=SearchResults, tags=["search"])
def search(
    runtime: RuntimeDep,
    q: Annotated[str, Query(min_length=1, max_length=1000, description="free-text query")],
    user_id: Annotated[str | None, Query(description="re-rank for this user's history")] = None,
    k: K = 10,
) -> dict[str, Any]:
    """Semantic search over the catalogue, personalised when ``user_id`` has history."""
    return runtime.search(q, k, user_id=user_id or None)


@public.get("/health", response_model=Health, tags=["ops"])
def health(runtime: RuntimeDep) -> dict[str, Any]:
    loaded = runtime.loaded
    last = runtime.store.log.last_offset()
    trained = loaded.info.trained_through_offset if loaded.info else 0
    return {
        "status": "ok",
        "model_version": loaded.version,
        "model_loaded_at": loaded.loaded_at,
        "trained_through_offset": trained,
        "last_offset": last,
        "events_since_training": max(0, last - trained),
        "catalogue_items": len(loaded.search) if loaded.search is not None else 0,
    }


@public.get("/metrics", response_class=PlainTextResponse, tags=["ops"])
def metrics(runtime: RuntimeDep, request: Request) -> PlainTextResponse:
    """Prometheus text format."""
    collected = get_metrics(request)
    collected.set_model(runtime.loaded.version, runtime.loaded.loaded_at)
    return PlainTextResponse(collected.render(), media_type=CONTENT_TYPE_LATEST)


# ----- writes -----


@writes.put(
    "/items/{item_id}",
    response_model=ItemUpserted,
    responses={422: {"model": Problems}, 401: {}, 403: {}},
    tags=["items"],
)
def put_item(item_id: str, body: ItemBody, runtime: RuntimeDep, request: Request) -> dict[str, Any]:
    """Create or replace a catalogue item: searchable at once, recommendable too if the model reads text."""
    fields = body.model_dump(exclude_unset=True)
    if fields.get("item_id") not in (None, item_id):
        problem = f"is {fields['item_id']!r} but the path says {item_id!r}"
        raise HTTPException(422, [{"record": "item", "field": "item_id", "problem": problem}])
    try:
        item = validate_item({**fields, "item_id": item_id}, where="item")
    except EventValidationError as error:
        raise HTTPException(422, [error.as_dict()]) from None
    recommendable = runtime.upsert_items([item])[item.item_id]
    get_metrics(request).items_upserted.inc()
    return {
        "item_id": item.item_id,
        "searchable": True,
        "recommendable": recommendable,
        "model_version": runtime.loaded.version,
    }


EVENTS_EXAMPLE = [
    {"user_id": "u1", "item_id": "i9", "event_type": "click", "timestamp": "2024-05-01T12:00:00Z"}
]


@writes.post(
    "/events",
    response_model=EventsAccepted,
    responses={422: {"model": Problems}, 401: {}, 403: {}},
    tags=["events"],
)
def post_events(
    records: Annotated[list[Any], Body(examples=[EVENTS_EXAMPLE], max_length=100_000)],
    runtime: RuntimeDep,
    request: Request,
) -> dict[str, Any]:
    """Append a batch of events in one durable transaction, or nothing if any record is invalid."""
    schema: EventSchema = request.app.state.event_schema
    events, problems = [], []
    for i, record in enumerate(records):
        try:
            events.append(schema.validate(record, where=f"events[{i}]"))
        except EventValidationError as error:
            problems.append(error.as_dict())
    if problems:
        raise HTTPException(422, problems)
    result = runtime.store.log.append(events)
    get_metrics(request).events_ingested.inc(result.accepted)
    return {
        "accepted": result.accepted,
        "duplicates": result.duplicates,
        "first_offset": result.first_offset,
        "last_offset": result.last_offset,
    }


# ----- admin -----


@admin.get("/models", response_model=ModelVersions)
def list_models(runtime: RuntimeDep) -> dict[str, Any]:
    return {
        "live": runtime.registry.live(),
        "serving": runtime.loaded.version,
        "versions": [info.to_dict() for info in runtime.registry.versions()],
    }


@admin.post(
    "/promote/{version}", response_model=Promotion, responses={404: {"description": "unknown version"}}
)
def promote(version: str, runtime: RuntimeDep) -> dict[str, Any]:
    """Make a version live and hot-swap to it; the old one answers until the new one is fully loaded."""
    previous = runtime.loaded.version
    try:
        runtime.promote(version)
    except KeyError as error:
        raise HTTPException(404, error.args[0]) from None
    return {"live": version, "previous": previous}


@admin.post(
    "/rollback", response_model=Promotion, responses={409: {"description": "nothing to roll back to"}}
)
def rollback(runtime: RuntimeDep) -> dict[str, Any]:
    """Promote the version that was live before the current one (the most recently retired)."""
    previous = runtime.loaded.version
    try:
        info = runtime.rollback()
    except LookupError as error:
        raise HTTPException(409, str(error)) from None
    return {"live": info.version, "previous": previous}


@admin.post("/reload", response_model=Reloaded)
def reload(runtime: RuntimeDep) -> dict[str, Any]:
    """Reload the live version and rebuild the search index (picks up catalogue edits made elsewhere)."""
    try:
        loaded = runtime.reload()
    except LookupError as error:
        raise HTTPException(409, str(error)) from None
    return {"model_version": loaded.version, "catalogue_items": len(loaded.search) if loaded.search else 0}


UpdateStrategy = Literal["finetune", "replay", "replay-distill", "adapter", "full"]


@admin.post(
    "/update",
    response_model=UpdateJob,
    status_code=202,
    responses={409: {"description": "an update is already running"}},
)
def start_update(request: Request, strategy: UpdateStrategy | None = None) -> dict[str, Any]:
    """Learn the events since the live version now, in a child process; it is promoted only if it is
    not worse than the live version on the newest events (see ``GET /admin/update`` for its outcome)."""
    try:
        return request.app.state.updates.start(strategy)
    except UpdateInProgress as error:
        raise HTTPException(409, str(error)) from None


@admin.get("/update", response_model=UpdateJob)
def update_status(request: Request) -> dict[str, Any]:
    """The running or last update started by this server: exit code and output."""
    return request.app.state.updates.status()
