"""What every wire dialect module provides, so that the app and the error mapping can treat
them alike."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import APIRouter
from starlette.responses import Response
from starlette.routing import BaseRoute

ErrorRenderer = Callable[[int, str, str], Response]
"""``render(status, name, message)``: an error in the dialect's envelope."""


@dataclass(frozen=True)
class Dialect:
    """One wire dialect: its name (stored with the jobs it creates), the path prefixes its
    routes live under, its routes, and how it shapes an error."""

    name: str
    prefixes: tuple[str, ...]
    router: APIRouter
    render_error: ErrorRenderer
    fast_routes: tuple[BaseRoute, ...] = ()
    """Plain Starlette routes matched before every FastAPI route (the hot poll), each also
    declared on ``router`` for the OpenAPI document."""
