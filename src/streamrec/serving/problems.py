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
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

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


def _from_pydantic(error: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's validation entry as a field problem: where it is and what is wrong, no input dump."""
    location = [str(part) for part in error.get("loc", ())]
    record = location[0] if location else "request"
    field = ".".join(location[1:]) or None
    problem = error.get("msg", "invalid")
    if "input" in error and error.get("type") not in ("missing", "json_invalid"):
        problem += f" (got {excerpt(error['input'])})"
    return {"record": record, "field": field, "problem": problem}


def too_large(limit: int) -> JSONResponse:
    detail = f"the request body is over the server's limit of {limit:,} bytes (server.max_body_bytes)"
    return problem_response(413, detail)


async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
    if error.status_code == 413:
        return too_large(request.app.state.settings.server.max_body_bytes)
    detail = error.detail if isinstance(error.detail, str) else HTTPStatus(error.status_code).phrase
    return problem_response(error.status_code, detail, headers=getattr(error, "headers", None))


async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    errors = [_from_pydantic(e) for e in error.errors()]
    return problem_response(422, _summary(errors), errors)


async def _invalid_input(request: Request, error: InvalidInput) -> JSONResponse:
    return problem_response(422, _summary(error.errors), error.errors)


def _summary(errors: list[dict[str, Any]]) -> str:
    shown = f"; the first {MAX_ERRORS} are listed" if len(errors) > MAX_ERRORS else ""
    return f"{len(errors)} invalid field(s), nothing was written{shown}"


def install(app: FastAPI) -> None:
    """Render every error as a problem, and document the problem responses in the OpenAPI schema."""
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(InvalidInput, _invalid_input)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            schema["components"]["schemas"].update(_component_schemas())
            for path in schema["paths"].values():
                for operation in path.values():
                    for code, response in operation["responses"].items():
                        if code.startswith("4"):
                            response["content"] = {
                                MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}
                            }
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _component_schemas() -> dict[str, Any]:
    schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    return {"FieldProblem": schema.pop("$defs")["FieldProblem"], "Problem": schema}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The problem responses an operation documents (their content is filled in by :func:`install`)."""
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
