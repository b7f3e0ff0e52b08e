"""The dashboard at ``/dashboard``: one page, its data as JSON, and a user lookup.

The page (``static/dashboard.html``, charts by the vendored Chart.js) holds no data itself;
it reads ``/dashboard/data``, ``/dashboard/users/{user_id}`` and the newest benchmark
plots (``/dashboard/plots``, from ``server.plots_dir``), which need the admin key
unless ``server.open_dashboard`` is true. The page takes the key from its URL's fragment
(``/dashboard#key=…``), which browsers never send to the server.
"""

from __future__ import annotations

import time
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Security
from fastapi.responses import FileResponse, HTMLResponse, Response

from streamrec import experiments
from streamrec.evaluation.online import online_metrics
from streamrec.events import MAX_ID_LENGTH
from streamrec.serving.access import api_key_header
from streamrec.serving.problems import responses
from streamrec.serving.runtime import Runtime
from streamrec.serving.schemas import PATH_ID

RATE_WINDOW = 3600.0  # the events-per-minute chart covers the last hour of event time
ONLINE_WINDOW = 86_400.0  # online metrics per version over the last day
RECENT_EVENTS = 20
NEWEST_PLOTS = 8
PLOT_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.png$"


async def require_dashboard(request: Request, key: Annotated[str | None, Security(api_key_header)]) -> None:
    """The admin key, unless the operator opened the dashboard (``server.open_dashboard``)."""
    if not request.app.state.settings.server.open_dashboard:
        request.app.state.access.check("admin", key)


page = APIRouter(tags=["dashboard"])
data = APIRouter(
    prefix="/dashboard",
    tags=["dashboard"],
    dependencies=[Depends(require_dashboard)],
    responses=responses(401, 403, 422),
)


def _static(name: str) -> bytes:
    return resources.files("streamrec.serving").joinpath("static", name).read_bytes()


@page.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
def dashboard_page() -> HTMLResponse:
    return HTMLResponse(_static("dashboard.html"))


@page.get("/dashboard/chart.js", include_in_schema=False)
def chart_library() -> Response:
    return Response(_static("chart.umd.min.js"), media_type="text/javascript")


def _versions(runtime: Runtime) -> list[dict[str, Any]]:
    rows = []
    for info in runtime.registry.versions():
        guardrail = info.guardrail or {}
        rows.append(
            {
                "version": info.version,
                "created_at": info.created_at,
                "status": info.status,
                "strategy": info.strategy,
                "ndcg@10": info.metrics.get("ndcg@10"),
                "live_ndcg@10": guardrail.get("live_ndcg@10"),
                "drift": bool(guardrail.get("drift")),
                "seconds": info.timings.get("train_seconds") or info.timings.get("update_seconds"),
                "notes": info.notes,
            }
        )
    return rows


@data.get("/data")
def dashboard_data(request: Request) -> dict[str, Any]:
    """Everything the page draws: ingest rate, lag, versions, the experiment, online metrics."""
    runtime: Runtime = request.app.state.runtime
    settings = request.app.state.settings
    store = runtime.store
    live = runtime.registry.live()
    last_offset = store.log.last_offset()
    trained = runtime.registry.get(live).trained_through_offset if live else 0
    stats = store.log.stats()
    newest = float(stats.get("last_timestamp") or time.time())
    current = experiments.running(runtime.registry)
    now = time.time()
    return {
        "now": now,
        "live": live,
        "serving": runtime.loaded.version,
        "events": last_offset,
        "lag_events": max(0, last_offset - trained),
        "events_per_minute": [
            {"t": t, "count": n} for t, n in store.log.counts_by_time(newest - RATE_WINDOW, newest + 1, 60.0)
        ],
        "versions": _versions(runtime),
        "experiment": experiments.judge(current, store, settings.online) if current else None,
        "online": online_metrics(
            store,
            now - ONLINE_WINDOW,
            now,
            click_types=settings.online.click_types,
            conversion_types=settings.online.conversion_types,
            window=settings.online.window_seconds,
        ),
    }


@data.get("/users/{user_id}", responses=responses(404))
def dashboard_user(
    request: Request, user_id: Annotated[str, Path(pattern=PATH_ID, max_length=MAX_ID_LENGTH)]
) -> dict[str, Any]:
    """A user's newest items (newest first) and what the live model recommends them now."""
    runtime: Runtime = request.app.state.runtime
    recent = runtime.store.log.recent_items(runtime.user_key(user_id), RECENT_EVENTS)
    if not recent:
        raise HTTPException(404, f"no events of user {user_id!r}")
    return {
        "user_id": user_id,
        "recent_items": [{"item_id": item, "title": runtime.title(item)} for item in reversed(recent)],
        "recommendations": runtime.recommend(user_id, 10),
    }


def _plots(request: Request) -> dict[str, Any]:
    """The newest ``*.png`` of ``server.plots_dir`` by name (newest first)."""
    folder = request.app.state.settings.server.plots_dir
    found = list(folder.glob("*.png")) if folder.is_dir() else []
    found.sort(key=lambda path: path.stat().st_mtime, reverse=True)
    return {path.name: path for path in found[:NEWEST_PLOTS]}


@data.get("/plots")
def dashboard_plots(request: Request) -> dict[str, Any]:
    """The newest benchmark plots (``streamrec bench … --out results/….json`` writes one beside its JSON)."""
    return {
        "folder": str(request.app.state.settings.server.plots_dir),
        "plots": [{"name": name, "modified": path.stat().st_mtime} for name, path in _plots(request).items()],
    }


BINARY = {"schema": {"type": "string", "format": "binary"}}
PNG = {200: {"description": "a plot", "content": {"image/png": BINARY}}}


@data.get("/plots/{name}", response_class=FileResponse, responses={**PNG, **responses(404)})
def dashboard_plot(request: Request, name: Annotated[str, Path(pattern=PLOT_NAME)]) -> FileResponse:
    """One of the listed plots (only those: no other file can be named)."""
    path = _plots(request).get(name)
    if path is None:
        raise HTTPException(404, f"no plot {name!r} among the newest in the plots folder")
    return FileResponse(path, media_type="image/png")
