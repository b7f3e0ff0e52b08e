"""The OpenAPI document, true to what this server does: its error shape, its open roles, its event types.

FastAPI derives most of the document from the routes; what it cannot
know are filled in here: ``POST /events`` takes :class:`EventIn` records (its
handler checks them one by one, to name every problem at once); every 4xx answers with the problem shape as
``application/problem+json``; an operation whose role is open on this server
(reads without a read key, writes with ``server.open_writes``) documents its
key as optional; and ``event_type`` lists the types this server accepts.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.utils import get_openapi

from streamrec.serving.access import Access, Role
from streamrec.serving.problems import MEDIA_TYPE, component_schemas
from streamrec.serving.schemas import EventIn


def install(app: FastAPI, access: Access, roles: dict[Role, APIRouter], event_types: tuple[str, ...]) -> None:
    """Have ``app.openapi()`` build (once) and return the document described above."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            components = schema["components"]["schemas"]
            components.update(component_schemas())
            components["EventIn"] = EventIn.model_json_schema(ref_template="#/components/schemas/{model}")
            components["EventIn"]["properties"]["event_type"]["enum"] = list(event_types)
            open_operations = {
                (route.path_format, method.lower())
                for role, router in roles.items()
                if access.is_open(role)
                for route in router.routes
                for method in getattr(route, "methods", ())
            }
            for path, operations in schema["paths"].items():
                for method, operation in operations.items():
                    if operation.pop("x-body-items", None) == "EventIn":  # checked by the handler
                        body = operation["requestBody"]["content"]["application/json"]["schema"]
                        body["items"] = {"$ref": "#/components/schemas/EventIn"}
                    for code, response in operation["responses"].items():
                        if code.startswith("4"):
                            response["content"] = {
                                MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}
                            }
                    if (path, method) in open_operations and "security" in operation:
                        operation["security"] = [{}, *operation["security"]]  # {}: no key needed
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
