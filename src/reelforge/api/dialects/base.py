"""What every wire dialect module provides, so that the app and the error mapping can treat
them alike."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict
from starlette.responses import Response
from starlette.types import ASGIApp


class ErrorRenderer(Protocol):
    """``render(status, name, message, param)``: an error in the dialect's envelope;
    ``param`` names the request field at fault, when one is (a dialect may leave it out)."""

    def __call__(self, status: int, name: str, message: str, param: str | None) -> Response: ...


@dataclass(frozen=True)
class Dialect:
    """One wire dialect: its name (stored with the jobs it creates), the path prefixes its
    routes live under, its routes, and how it shapes an error."""

    name: str
    prefixes: tuple[str, ...]
    router: APIRouter
    render_error: ErrorRenderer
    hot_routes: Mapping[str, ASGIApp] = field(default_factory=dict)
    """GET paths answered by bare ASGI apps before FastAPI's stack (the polls); each is also
    declared on ``router``, for the OpenAPI document."""


class StrictBody(BaseModel):
    """Base of every dialect's request bodies: types are strict (``"6"`` is not 6) and a
    field the body does not define is refused (``api.errors`` answers 400 naming it and the
    fields the route takes), never silently dropped."""

    model_config = ConfigDict(strict=True, extra="forbid")
