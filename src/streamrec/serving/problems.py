"""One error shape for every 4xx, documented on every operation (RFC 9457 problem details).

Whatever goes wrong — a bad record, a missing key, an oversized body, an unknown
route — the client gets ``application/problem+json`` with ``type``, ``title``,
``status``, ``detail``, and for invalid input ``errors``: one entry per record and
field with what is wrong. Input is never echoed back beyond a short excerpt, so a
huge bad request cannot make a huge response.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.routing import Match, Route

from streamrec.events import excerpt

MEDIA_TYPE = "application/problem+json"
MAX_ERRORS = 100  # entries of ``errors`` listed at most; ``detail`` gives the total


class FieldProblem(BaseModel):
    """What is wrong with one field of one record (``record``: e.g. ``events[3]``, ``query``)."""

    record: str
    field: str | None
    problem: str


class Problem(BaseModel):
    """An error response (RFC 9457): ``errors`` lists invalid fields, when the input was invalid."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[FieldProblem] = []


class InvalidInput(Exception):
    """Records or fields the API refuses, each with its problem; rendered as one 422 problem."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} invalid field(s)")
        self.errors = errors


def problem_response(
    status: int, detail: str, errors: list[dict[str, Any]] | None = None, headers: dict | None = None
) -> JSONResponse:
    errors = errors or []
    body = Problem(
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        errors=[FieldProblem(**e) for e in errors[:MAX_ERRORS]],
    )
    return JSONResponse(body.model_dump(), status_code=status, headers=headers, media_type=MEDIA_TYPE)


def field_problems(errors: list[Any], record: str | None = None) -> list[dict[str, Any]]:
    """Pydantic's validation errors as one problem per field: where, and what is wrong (no input dump).

    ``record`` names the record the errors' locations start in; else the location's first
    part does (``body``, ``query``, ``path``). A union's alternatives, which pydantic reports
    one by one, are joined into one problem.
    """
    merged: dict[tuple[str, str | None], list[str]] = {}
    for error in errors:
        if error.get("type") == "json_invalid":  # its location is a character position
            position, reason = error["loc"][-1], error.get("ctx", {}).get("error", "")
            merged[("body", None)] = [f"is not valid JSON at character {position} ({reason})"]
            continue
        parts = [part for part in error.get("loc", ()) if not _is_union_tag(part)]
        if record is None:
            name, parts = (str(parts[0]) if parts else "request"), parts[1:]
        else:
            name = record
        if parts and isinstance(parts[0], int):  # an item of a list body
            name, parts = f"{name}[{parts[0]}]", parts[1:]
        field = ".".join(str(part) for part in parts) or None
        problem = error.get("msg", "invalid")
        if "input" in error and error.get("type") != "missing":
            problem += f" (got {excerpt(error['input'])})"
        merged.setdefault((name, field), [])
        if problem not in merged[(name, field)]:
            merged[(name, field)].append(problem)
    return [
        {"record": name, "field": field, "problem": "; or ".join(problems)}
        for (name, field), problems in merged.items()
    ]


def _is_union_tag(part: object) -> bool:
    """Pydantic names a union's alternatives in locations (``str``, ``constrained-str``, ``function-…``)."""
    return isinstance(part, str) and (
        part in ("str", "int", "float", "bool", "none", "dict[str,any]") or any(c in part for c in "-[(")
    )


def too_large(limit: int) -> JSONResponse:
    detail = f"the request body is over the server's limit of {limit:,} bytes (server.max_body_bytes)"
    return problem_response(413, detail)


async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
    if error.status_code == 413:
        return too_large(request.app.state.settings.server.max_body_bytes)
    detail = error.detail if isinstance(error.detail, str) else HTTPStatus(error.status_code).phrase
    headers = getattr(error, "headers", None)
    if error.status_code == 405:  # every method the path takes, not only the first route's
        headers = {**(headers or {}), "Allow": ", ".join(sorted(_allowed_methods(request)))}
    return problem_response(error.status_code, detail, headers=headers)


def _allowed_methods(request: Request) -> set[str]:
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, Route | APIRoute) and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods or set()
    return methods


async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    errors = field_problems(list(error.errors()))
    return problem_response(422, _summary(errors), errors)


async def _invalid_input(request: Request, error: InvalidInput) -> JSONResponse:
    return problem_response(422, _summary(error.errors), error.errors)


def _summary(errors: list[dict[str, Any]]) -> str:
    shown = f"; the first {MAX_ERRORS} are listed" if len(errors) > MAX_ERRORS else ""
    return f"{len(errors)} invalid field(s), nothing was written{shown}"


def install(app: FastAPI) -> None:
    """Render every error as a problem (:mod:`streamrec.serving.openapi` documents them)."""
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(InvalidInput, _invalid_input)


def component_schemas() -> dict[str, Any]:
    """The problem shape's JSON schemas, for the OpenAPI document's components."""
    schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    return {"FieldProblem": schema.pop("$defs")["FieldProblem"], "Problem": schema}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The problem responses an operation documents (their content: :mod:`streamrec.serving.openapi`)."""
    return {code: {"description": DESCRIPTIONS[code]} for code in codes}


DESCRIPTIONS = {
    400: "malformed request",
    401: "missing or wrong X-API-Key",
    403: "no key of the needed kind is configured on the server",
    404: "not found",
    409: "conflicts with the current state",
    413: "request body over server.max_body_bytes",
    422: "invalid input: every invalid record and field at once",
    429: "over server.rate_limit; see Retry-After",
}
