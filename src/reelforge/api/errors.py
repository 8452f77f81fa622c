"""Errors to HTTP, in one place: every answer that is not a success is rendered in the
envelope of the dialect whose routes the request was for (``dialect_for(path)``), with the
status of the error's type. Handlers raise reelforge errors; nothing else shapes an error."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.responses import Response

from reelforge.api.dialects import dialect_for
from reelforge.api.headers import SECURITY_HEADERS
from reelforge.errors import Busy, InvalidRequest, ReelforgeError

log = logging.getLogger("reelforge.api")


def error_response(
    path: str, status: int, name: str, message: str, param: str | None = None
) -> Response:
    """An error for a request to ``path``, in that route's dialect, with the security
    headers (``api.headers``: some errors are answered outside its middleware); ``param``
    names the request field at fault, if one is."""
    response = dialect_for(path).render_error(status, name, message, param)
    response.raw_headers.extend(SECURITY_HEADERS)
    return response


def install(app: FastAPI) -> None:
    """Register the handlers that turn exceptions into answers."""
    app.add_exception_handler(ReelforgeError, _reelforge_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid_body)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)


def reelforge_error_response(path: str, exc: ReelforgeError) -> Response:
    """A reelforge error raised by a handler for ``path``, in that route's dialect."""
    param = exc.field if isinstance(exc, InvalidRequest) else None
    response = error_response(path, exc.status_code, exc.name, exc.message, param)
    if isinstance(exc, Busy):
        response.headers["Retry-After"] = str(exc.retry_after)
        response.headers.update(exc.headers)
    return response


async def _reelforge_error(request: Request, exc: ReelforgeError) -> Response:
    return reelforge_error_response(request.url.path, exc)


async def _invalid_body(request: Request, exc: RequestValidationError) -> Response:
    first = exc.errors()[0]
    path = request.url.path
    if first.get("type") == "json_invalid":  # its location is a character offset, not a field
        reason = first.get("ctx", {}).get("error", "JSON decode error")
        return error_response(path, 400, "InvalidRequest", f"body: not valid JSON ({reason})")
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query")]
    field = ".".join(location) or "body"
    message = f"{field}: {first.get('msg', 'invalid value')}"
    if first.get("type") == "extra_forbidden":  # a ``StrictBody`` refusing a field it lacks
        fields = _body_fields(request)
        message = f"{field}: unknown field" + (f"; this route takes {fields}" if fields else "")
    if "input" in first and first.get("type") != "missing" and field != "body":
        message += f" (got {_shorten(first['input'])})"
    return error_response(path, 400, "InvalidRequest", message, field)


def _body_fields(request: Request) -> str:
    """The JSON names of the fields the route's body model defines, comma-separated ("" if
    the route has no body model)."""
    route = request.scope.get("route")
    params = route.dependant.body_params if isinstance(route, APIRoute) else []
    model = params[0].field_info.annotation if len(params) == 1 else None
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return ""
    return ", ".join(info.alias or name for name, info in model.model_fields.items())


async def _http_error(request: Request, exc: HTTPException) -> Response:
    response = error_response(request.url.path, exc.status_code, "HTTPError", str(exc.detail))
    response.headers.update(exc.headers or {})  # e.g. a 405's ``Allow``
    return response


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    message = "the server failed; the error has been logged"
    return error_response(request.url.path, 500, "InternalError", message)


def _shorten(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
