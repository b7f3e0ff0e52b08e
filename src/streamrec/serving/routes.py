"""The HTTP endpoints, as routers: ops (open), reads, catalogue/event writes, and admin.

Handlers that run the model or touch SQLite are plain ``def``: FastAPI runs
them in its thread pool, so a PyTorch forward never blocks the event loop.
``GET /recommend/{user_id}`` awaits the micro-batcher's thread instead.
HTTP errors are raised here and only here (rendered by
:mod:`streamrec.serving.problems`); the runtime raises plain Python errors
(``KeyError``, ``LookupError``). Who may call each router is
:mod:`streamrec.serving.access`'s business.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Path, Query, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import TypeAdapter, ValidationError

from streamrec import experiments
from streamrec.config import Strategy
from streamrec.evaluation.interleaving import interleave_answers
from streamrec.events import MAX_ID_LENGTH as MAX_ID
from streamrec.events import EventSchema, EventValidationError
from streamrec.experiments import INTERLEAVED
from streamrec.home import UpdateInProgress
from streamrec.items import validate_item
from streamrec.privacy import export_user, record_json
from streamrec.serving.access import require
from streamrec.serving.batching import Batcher
from streamrec.serving.impressions import ImpressionRecorder
from streamrec.serving.metrics import ServingMetrics
from streamrec.serving.problems import InvalidInput, field_problems, responses
from streamrec.serving.profiles import profile
from streamrec.serving.runtime import RecommendRequest, Runtime
from streamrec.serving.schemas import (
    DIVERSITY,
    MAX_K,
    PATH_ID,
    EventIn,
    EventsAccepted,
    ExperimentInfo,
    ExperimentStart,
    ExperimentStop,
    Forgotten,
    Health,
    ItemBody,
    ItemUpserted,
    Judgement,
    ModelVersions,
    Profile,
    Promotion,
    Recommendations,
    Reloaded,
    SearchResults,
    SessionRequest,
    SimilarItems,
    UpdateJob,
)


# Dependencies are async: FastAPI would run a plain ``def`` one in its thread pool, one more
# thread hand-off per request for an attribute read.
async def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def get_metrics(request: Request) -> ServingMetrics:
    return request.app.state.metrics


async def get_batcher(request: Request) -> Batcher[RecommendRequest, dict[str, Any]]:
    return request.app.state.batcher


async def get_impressions(request: Request) -> ImpressionRecorder:
    return request.app.state.impressions


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
ImpressionsDep = Annotated[ImpressionRecorder, Depends(get_impressions)]
K = Annotated[int, Query(ge=1, le=MAX_K, description="how many items")]
Diversity = Annotated[float, Query(ge=0, le=1, description=DIVERSITY)]
ItemId = Annotated[str, Path(pattern=PATH_ID, max_length=MAX_ID, description="an item id")]
UserIdPath = Annotated[str, Path(pattern=PATH_ID, max_length=MAX_ID, description="a user id")]
NDJSON = "application/x-ndjson"
ANY_REQUEST = (401, 403, 422, 429)  # keys, validation and the rate limit apply to every operation

ops = APIRouter(tags=["ops"])  # health and metrics: open, for load balancers and scrapers
public = APIRouter(dependencies=[Depends(require("read"))], responses=responses(*ANY_REQUEST))
writes = APIRouter(dependencies=[Depends(require("write"))], responses=responses(*ANY_REQUEST, 400, 413))
admin = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(require("admin"))],
    responses=responses(*ANY_REQUEST),
)


# ----- public reads -----


@public.get(
    "/recommend/{user_id}", response_model=Recommendations, tags=["recommend"], responses=responses(404)
)
async def recommend_user(
    user_id: Annotated[str, Path(pattern=PATH_ID, max_length=MAX_ID)],
    batcher: Annotated[Batcher[RecommendRequest, dict[str, Any]], Depends(get_batcher)],
    impressions: ImpressionsDep,
    runtime: RuntimeDep,
    k: K = 10,
    exclude_seen: bool = True,
    category: Annotated[
        str | None, Query(max_length=MAX_ID, description="only items of this catalogue category")
    ] = None,
    diversity: Diversity = 0.0,
    explain: Annotated[bool, Query(description="name the history items behind each item")] = False,
) -> dict[str, Any]:
    """Top-k for a user from their latest events; users without history get trending items."""
    # Scored on the batcher's thread, with the other requests waiting then (serving/batching.py).
    asked = RecommendRequest(user_id, k, exclude_seen, category or None, None, diversity, explain)
    experiment = runtime.experiment
    if experiment is not None and experiment.interleaved:  # both versions answer; one merged list
        both = [dataclasses.replace(asked, version=v) for v in (experiment.a, experiment.b)]
        a, b = await asyncio.gather(*(batcher.submit(request) for request in both))
        answer, teams = interleave_answers(a, b, k)
        return impressions.shown(answer, "recommend", arm=experiment.label(INTERLEAVED), teams=teams)
    arm = runtime.arm_of(user_id)  # (label, version) of the user's arm while an experiment runs
    request = dataclasses.replace(asked, version=arm[1]) if arm else asked
    answer = await batcher.submit(request)
    return impressions.shown(answer, "recommend", arm=arm[0] if arm else None)


@public.post("/recommend", response_model=Recommendations, tags=["recommend"], responses=responses(400, 413))
def recommend_session(
    session: SessionRequest, runtime: RuntimeDep, impressions: ImpressionsDep
) -> dict[str, Any]:
    """Top-k for an anonymous session's items; with no known item, trending items."""
    answer = runtime.recommend_session(
        session.items,
        session.k,
        exclude_seen=session.exclude_seen,
        category=session.category or None,
        diversity=session.diversity,
        explain=session.explain,
    )
    return impressions.shown(answer, "session")


@public.get(
    "/items/{item_id}/similar",
    response_model=SimilarItems,
    responses=responses(404),
    tags=["items"],
)
def similar_items(item_id: ItemId, runtime: RuntimeDep, k: K = 10) -> dict[str, Any]:
    """Nearest items by cosine of the live model's item embeddings."""
    try:
        return runtime.similar(item_id, k)
    except KeyError as error:
        raise HTTPException(404, error.args[0]) from None


@public.get("/users/{user_id}/profile", response_model=Profile, responses=responses(404), tags=["users"])
def user_profile(user_id: UserIdPath, runtime: RuntimeDep) -> dict[str, Any]:
    """The user's event types, favourite categories, newest items, and the model's view of their taste."""
    try:
        return profile(runtime, user_id)
    except LookupError as error:
        raise HTTPException(404, error.args[0]) from None


@public.get("/search", response_model=SearchResults, tags=["search"])
def search(
    runtime: RuntimeDep,
    impressions: ImpressionsDep,
    q: Annotated[str, Query(min_length=1, max_length=1000, description="free-text query")],
    user_id: Annotated[
        str | None, Query(max_length=MAX_ID, description="re-rank for this user's history")
    ] = None,
    k: K = 10,
    diversity: Diversity = 0.0,
) -> dict[str, Any]:
    """Semantic search over the catalogue, personalised when ``user_id`` has history."""
    return impressions.shown(runtime.search(q, k, user_id=user_id or None, diversity=diversity), "search")


@ops.get("/health", response_model=Health)
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


@ops.get("/metrics", response_class=PlainTextResponse)
def metrics(runtime: RuntimeDep, request: Request) -> PlainTextResponse:
    """Prometheus text format."""
    collected = get_metrics(request)
    collected.set_model(runtime.loaded.version, runtime.loaded.loaded_at)
    return PlainTextResponse(collected.render(), media_type=CONTENT_TYPE_LATEST)


# ----- writes -----


@writes.put("/items/{item_id}", response_model=ItemUpserted, tags=["items"], responses=responses(404))
def put_item(item_id: ItemId, body: ItemBody, runtime: RuntimeDep, request: Request) -> dict[str, Any]:
    """Create or replace a catalogue item: searchable at once, recommendable too if the model reads text."""
    try:
        item = validate_item({**body.model_dump(exclude_none=True), "item_id": item_id}, where="item")
    except EventValidationError as error:
        raise InvalidInput([error.as_dict()]) from None
    try:
        upserted = runtime.upsert_items([item])[item.item_id]
    except ValueError as error:  # what this backend cannot store (PostgreSQL: a NUL character)
        raise InvalidInput([{"record": "item", "field": None, "problem": str(error)}]) from None
    get_metrics(request).items_upserted.inc()
    return {
        "item_id": item.item_id,
        "searchable": True,
        "recommendable": upserted.recommendable,
        "model_version": runtime.loaded.version,
        "category": upserted.category,
        "category_guessed": upserted.category_guessed,
        "category_probability": upserted.category_probability,
    }


EVENTS_EXAMPLE = [
    {"user_id": "u1", "item_id": "i9", "event_type": "click", "timestamp": "2024-05-01T12:00:00Z"}
]


EVENT_IN = TypeAdapter(EventIn)


@writes.post(
    "/events",
    response_model=EventsAccepted,
    tags=["events"],
    # Each record is checked here, not by FastAPI, so one answer names every invalid record and field.
    openapi_extra={"x-body-items": "EventIn"},
)
def post_events(
    records: Annotated[list[Any], Body(examples=[EVENTS_EXAMPLE])],
    runtime: RuntimeDep,
    request: Request,
) -> dict[str, Any]:
    """Append a batch of events in one durable transaction, or nothing if any record is invalid.

    At most ``server.max_events_per_request`` records (100,000 by default) and
    ``server.max_body_bytes`` of JSON (16 MiB)."""
    limit = request.app.state.settings.server.max_events_per_request
    if len(records) > limit:
        problem = f"{len(records):,} records, more than server.max_events_per_request ({limit:,})"
        raise InvalidInput([{"record": "events", "field": None, "problem": problem}])
    schema: EventSchema = request.app.state.event_schema
    events, problems = [], []
    for i, record in enumerate(records):
        where = f"events[{i}]"
        try:
            fields = EVENT_IN.validate_python(record).model_dump(exclude_none=True)
            events.append(schema.validate(fields, where=where))
        except ValidationError as error:
            problems.extend(field_problems(error.errors(), where))
        except EventValidationError as error:
            problems.append(error.as_dict())
    if problems:
        raise InvalidInput(problems)
    try:
        result = runtime.store.log.append(events)
    except ValueError as error:  # what this backend cannot store (PostgreSQL: a NUL character)
        raise InvalidInput([{"record": "events", "field": None, "problem": str(error)}]) from None
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


@admin.post("/promote/{version}", response_model=Promotion, responses=responses(404))
def promote(version: str, runtime: RuntimeDep) -> dict[str, Any]:
    """Make a version live and hot-swap to it; the old one answers until the new one is fully loaded."""
    previous = runtime.loaded.version
    try:
        runtime.promote(version)
    except KeyError as error:
        raise HTTPException(404, error.args[0]) from None
    return {"live": version, "previous": previous}


@admin.post("/rollback", response_model=Promotion, responses=responses(409))
def rollback(runtime: RuntimeDep) -> dict[str, Any]:
    """Promote the version that was live before the current one (the most recently retired)."""
    previous = runtime.loaded.version
    try:
        info = runtime.rollback()
    except LookupError as error:
        raise HTTPException(409, str(error)) from None
    return {"live": info.version, "previous": previous}


@admin.post("/reload", response_model=Reloaded, responses=responses(409))
def reload(runtime: RuntimeDep) -> dict[str, Any]:
    """Reload the live version and rebuild the search index (picks up catalogue edits made elsewhere)."""
    try:
        loaded = runtime.reload()
    except LookupError as error:
        raise HTTPException(409, str(error)) from None
    return {"model_version": loaded.version, "catalogue_items": len(loaded.search) if loaded.search else 0}


@admin.post("/update", response_model=UpdateJob, status_code=202, responses=responses(409))
def start_update(request: Request, strategy: Strategy | None = None) -> dict[str, Any]:
    """Learn the events since the live version now, in a child process; it is promoted only if it is
    not worse than the live version on the newest events (see ``GET /admin/update`` for its outcome)."""
    try:
        return request.app.state.updates.start(strategy)
    except UpdateInProgress as error:
        raise HTTPException(409, str(error)) from None


@admin.get("/update", response_model=UpdateJob)
def update_status(request: Request) -> dict[str, Any]:
    """The running or last update started by this server process: exit code and output."""
    return request.app.state.updates.status()


@admin.post("/ab", response_model=ExperimentInfo, status_code=201, responses=responses(400, 404, 409))
def start_experiment(body: ExperimentStart, runtime: RuntimeDep) -> dict[str, Any]:
    """Start an A/B test between two stored versions; every server process follows it within a second."""
    a = body.a or runtime.registry.live()
    if a is None:
        raise HTTPException(409, "no live version: name arm a's version")
    try:
        started = experiments.start(
            runtime.registry,
            a,
            body.b,
            share=body.share,
            metric=body.metric,
            alpha=body.alpha,
            method=body.method,
        )
    except experiments.ExperimentError as error:
        status = 404 if "no version" in str(error) else 409
        raise HTTPException(status, str(error)) from None
    runtime.follow_experiment()
    return experiments.public(started)


@admin.get("/ab", response_model=Judgement, responses=responses(404))
def experiment_status(request: Request, runtime: RuntimeDep) -> dict[str, Any]:
    """The running experiment's per-arm online figures, sequential p-value and decision."""
    current = experiments.running(runtime.registry)
    if current is None:
        raise HTTPException(404, "no experiment is running")
    return experiments.judge(current, runtime.store, request.app.state.settings.online)


@admin.post("/ab/stop", response_model=Judgement, responses=responses(400, 404))
def stop_experiment(body: ExperimentStop, request: Request, runtime: RuntimeDep) -> dict[str, Any]:
    """Stop the running experiment; promote its significant winner, an arm, or nothing."""
    try:
        judgement = experiments.conclude(
            runtime.registry, runtime.store, request.app.state.settings.online, body.promote
        )
    except LookupError as error:
        raise HTTPException(404, str(error)) from None
    if judgement["promoted"] is not None and judgement["promoted"] != runtime.registry.live():
        runtime.promote(judgement["promoted"])
    runtime.follow_experiment()
    return judgement


@admin.delete("/users/{user_id}", response_model=Forgotten, tags=["users"])
def forget_user(user_id: UserIdPath, runtime: RuntimeDep, impressions: ImpressionsDep) -> dict[str, Any]:
    """Erase the user: their events and impressions leave the store in one transaction, and the
    request is recorded (when, counts, the versions trained on them; not the user id). Their
    later events start a fresh history."""
    impressions.flush()  # what this process showed them and has not written yet goes too
    return record_json(runtime.forget_user(user_id, requested_by="api:admin"))


@admin.get(
    "/users/{user_id}/export",
    response_class=Response,
    responses={
        200: {"content": {NDJSON: {"schema": {"type": "string"}}}, "description": "JSON lines"},
        **responses(404),
    },
    tags=["users"],
)
def export_user_data(user_id: UserIdPath, runtime: RuntimeDep) -> Response:
    """The user's events (oldest first), then one ``derived`` line (event counts, recent items,
    top categories), as JSON lines."""
    try:
        lines = [
            json.dumps(line, ensure_ascii=False)
            for line in export_user(runtime.store, user_id, runtime.user_key)
        ]
    except LookupError as error:
        raise HTTPException(404, error.args[0]) from None
    return Response("\n".join(lines) + "\n", media_type=NDJSON)


ROUTERS = (ops, public, writes, admin)
ROLES = {"read": public, "write": writes, "admin": admin}  # who may call each router (access.require)
