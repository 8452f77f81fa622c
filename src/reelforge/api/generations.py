"""The contract's routes: create and poll, in the legacy and the unified dialect, over one
store (an id made on one route is answered on the other)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from reelforge.api.auth import authenticate
from reelforge.api.deps import CallerDep, Services, ServicesDep
from reelforge.api.schemas import (
    ErrorInfo,
    Generation,
    LegacyCreate,
    LegacyCreated,
    Submission,
    UnifiedCreate,
    UnifiedCreated,
    VideoLink,
)
from reelforge.api.submit import accept
from reelforge.contract import Status
from reelforge.engines.registry import capabilities
from reelforge.errors import InvalidRequest, NotFound
from reelforge.jobs.model import Job

router = APIRouter()
LEGACY = "/v2/generate/video/minimax/generation"
UNIFIED = "/v2/video/generations"
MAX_ID_LENGTH = 64
GenerationId = Annotated[str, Query(min_length=1, max_length=MAX_ID_LENGTH)]
POLL_QUERY: dict[str, Any] = {
    "parameters": [
        {
            "name": "generation_id",
            "in": "query",
            "required": True,
            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH},
        }
    ]
}
"""The poll routes' query, for the OpenAPI document (``fetch`` reads it by hand)."""


@router.get(LEGACY, response_model=Generation, openapi_extra=POLL_QUERY)
@router.get(UNIFIED, response_model=Generation, openapi_extra=POLL_QUERY)
async def fetch(request: Request) -> Response:
    """Poll a generation, on the event loop: one indexed read under WAL, never waiting.

    The most requested route: first in the routing table, and it reads its key and query
    itself, as FastAPI's dependency solving and validation would double its cost per
    request (``bench/service.py``). The model is serialised here, once; FastAPI would
    validate it again on the way out.
    """
    services: Services = request.app.state.services
    caller = authenticate(services.store, request.headers.get("authorization"))
    generation_id = _generation_id(request.query_params.get("generation_id"))
    job = services.store.get(generation_id, owner=caller.id)
    if job is None:
        raise NotFound(f"no generation {generation_id!r}")
    generation = view(job, services, base_url=str(request.base_url))
    return Response(generation.model_dump_json(), media_type="application/json")


def _generation_id(value: str | None) -> str:
    """The ``generation_id`` query parameter, checked as ``GenerationId`` would be."""
    if value is None:
        raise InvalidRequest("generation_id", "Field required")
    if not 1 <= len(value) <= MAX_ID_LENGTH:
        raise InvalidRequest(
            "generation_id", f"must be 1 to {MAX_ID_LENGTH} characters (got {len(value)})"
        )
    return value


@router.post(LEGACY, response_model=LegacyCreated)
def create_legacy(body: LegacyCreate, caller: CallerDep, services: ServicesDep) -> LegacyCreated:
    job = _accept(body.submission(), caller.id, services)
    return LegacyCreated(generation_id=job.id, status=job.status)


@router.post(UNIFIED, response_model=UnifiedCreated)
def create_unified(body: UnifiedCreate, caller: CallerDep, services: ServicesDep) -> UnifiedCreated:
    job = _accept(body.submission(), caller.id, services)
    return UnifiedCreated(id=job.id, status=job.status)


def _accept(submission: Submission, owner: str, services: Services) -> Job:
    return accept(
        submission,
        owner=owner,
        settings=services.settings,
        models=services.models,
        store=services.store,
        storage=services.storage,
    )


@router.delete(LEGACY, response_model=Generation)
@router.delete(UNIFIED, response_model=Generation)
def cancel(
    generation_id: GenerationId, caller: CallerDep, services: ServicesDep, request: Request
) -> Generation:
    """Cancel a generation (reelforge's extension): a queued one ends at once in ``error``
    (``Cancelled``); a running one stops at its next step; an ended one is unchanged."""
    job = services.store.cancel(generation_id, owner=caller.id)
    if job is None:
        raise NotFound(f"no generation {generation_id!r}")
    return view(job, services, base_url=str(request.base_url))


@router.get("/v2/models")
async def list_models(_: CallerDep, services: ServicesDep) -> dict[str, Any]:
    """The served models and what each can be asked (reelforge's extension)."""
    return {
        "models": [
            {"id": model_id, "engine": spec.engine, **asdict(capabilities(spec))}
            for model_id, spec in sorted(services.models.items())
        ]
    }


def view(job: Job, services: Services, *, base_url: str) -> Generation:
    """The wire form of ``job``: video only when completed, error only when in error."""
    video = None
    if job.status is Status.COMPLETED and job.video_key and job.purged_at is None:
        video = VideoLink(url=services.storage.video_url(job.video_key, base_url=base_url))
    error = None
    if job.status is Status.ERROR:
        error = ErrorInfo(name=job.error_name or "Error", message=job.error_message or "")
    meta = None
    if job.status.is_terminal:
        meta = {"usage": {"credits_used": job.credits_used or 0.0}, **job.meta}
        if job.purged_at is not None:
            meta["purged_at"] = job.purged_at  # retention deleted the video
    return Generation(
        id=job.id,
        status=job.status,
        video=video,
        error=error,
        meta=meta,
        progress=job.progress,
        model=job.model,
        created_at=job.created_at,
        finished_at=job.finished_at,
    )
