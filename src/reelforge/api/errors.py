"""Errors to HTTP, in one place: every answer that is not a success is JSON of the form
``{"error": {"name": ..., "message": ...}}`` with the status of the error's type."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from reelforge.errors import ReelforgeError

log = logging.getLogger("reelforge.api")


def error_response(status: int, name: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"name": name, "message": message}}, status_code=status)


def install(app: FastAPI) -> None:
    """Register the handlers that turn exceptions into JSON answers."""
    app.add_exception_handler(ReelforgeError, _reelforge_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid_body)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)


async def _reelforge_error(_: Request, exc: ReelforgeError) -> JSONResponse:
    return error_response(exc.status_code, exc.name, exc.message)


async def _invalid_body(_: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0]
    if first.get("type") == "json_invalid":  # its location is a character offset, not a field
        reason = first.get("ctx", {}).get("error", "JSON decode error")
        return error_response(400, "InvalidRequest", f"body: not valid JSON ({reason})")
    location = [str(part) for part in first.get("loc", ()) if part not in ("body", "query")]
    field = ".".join(location) or "body"
    message = f"{field}: {first.get('msg', 'invalid value')}"
    if "input" in first and first.get("type") != "missing" and field != "body":
        message += f" (got {_shorten(first['input'])})"
    return error_response(400, "InvalidRequest", message)


async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
    return error_response(exc.status_code, "HTTPError", str(exc.detail))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "InternalError", "the server failed; the error has been logged")


def _shorten(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
