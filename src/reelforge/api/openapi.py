"""The OpenAPI document: every status a route can answer, the bearer key scheme, no 422.

A route declares what it can answer in one line, from the error types it raises::

    @router.get(PATH, responses=error_responses(InvalidRequest, Unauthorized, NotFound))

Validation failures are 400 (``api.errors``), never FastAPI's 422, so ``openapi_document``
leaves FastAPI's validation 422 out of every operation (a 422 a route declares itself stays).
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Final

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.security import HTTPBearer
from pydantic import BaseModel

from reelforge.errors import ReelforgeError

BEARER: Final = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An API key: `Authorization: Bearer <key>` (`reelforge keys create`).",
)
"""The key scheme every authenticated route declares (``Security(BEARER)``); reading and
checking the key stays with ``api.auth``."""


class ErrorInfo(BaseModel):
    name: str
    message: str


class ErrorAnswer(BaseModel):
    """The default envelope of an error: ``{"error": {"name", "message"}}``."""

    error: ErrorInfo


def error_responses(
    *answers: type[ReelforgeError] | int, model: type[BaseModel] = ErrorAnswer
) -> dict[int | str, dict[str, Any]]:
    """A route's ``responses=``: one entry per status that ``answers`` (error types, or
    bare statuses such as 416) map to, described by the errors' names and docstrings, with
    ``model`` (the dialect's error envelope) as the body of every error type's status."""
    described: dict[int, list[str]] = {}
    typed: set[int] = set()
    for answer in answers:
        if isinstance(answer, int):
            described.setdefault(answer, []).append(HTTPStatus(answer).phrase)
            continue
        typed.add(answer.status_code)
        summary = (answer.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        described.setdefault(answer.status_code, []).append(
            f"{answer.__name__}: {summary}" if summary else answer.__name__
        )
    return {
        status: {"description": "; ".join(lines), **({"model": model} if status in typed else {})}
        for status, lines in sorted(described.items())
    }


def openapi_document(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """``app.openapi``: FastAPI's document without its validation 422s and their schemas,
    made once."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            for path in document.get("paths", {}).values():
                for operation in path.values():
                    _drop_validation_422(operation.get("responses", {}))
            schemas = document.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            app.openapi_schema = document
        return app.openapi_schema

    return build


def _drop_validation_422(responses: dict[str, Any]) -> None:
    """Remove the 422 FastAPI adds to a route with parameters (its ``HTTPValidationError``)."""
    schema = responses.get("422", {}).get("content", {}).get("application/json", {})
    if schema.get("schema", {}).get("$ref", "").endswith("/HTTPValidationError"):
        del responses["422"]
