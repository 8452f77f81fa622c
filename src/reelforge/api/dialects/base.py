"""What every wire dialect module provides, so that the app and the error mapping can treat
them alike."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict
from starlette.responses import Response
from starlette.types import ASGIApp

from reelforge.jobs.model import EventKind, Job
from reelforge.storage.base import Storage


class ErrorRenderer(Protocol):
    """``render(status, name, message, param)``: an error in the dialect's envelope;
    ``param`` names the request field at fault, when one is (a dialect may leave it out)."""

    def __call__(self, status: int, name: str, message: str, param: str | None) -> Response: ...


@dataclass(frozen=True)
class WebhookPayload:
    """What a dialect sends a webhook receiver about one change of a job."""

    event: str
    """What happened, in the dialect's words (``completed``, ``video.completed``, ...)."""
    body: dict[str, Any]


class WebhookShaper(Protocol):
    """``shape(job, kind, storage, base_url)``: the payload for ``job`` as it stood right
    after an event of ``kind`` (a status change), or None if the dialect sends none for it.
    ``base_url`` is the API's own address, for links to local files."""

    def __call__(
        self, job: Job, kind: EventKind, storage: Storage, base_url: str
    ) -> WebhookPayload | None: ...


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
    webhook_payload: WebhookShaper | None = None
    """How the dialect tells a webhook receiver of a job's status change."""


class StrictBody(BaseModel):
    """Base of every dialect's request bodies: types are strict (``"6"`` is not 6) and a
    field the body does not define is refused (``api.errors`` answers 400 naming it and the
    fields the route takes), never silently dropped."""

    model_config = ConfigDict(strict=True, extra="forbid")
