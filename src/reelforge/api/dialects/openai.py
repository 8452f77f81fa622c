"""OpenAI's videos API (``/v1/videos``, ``/v1/models``) over the same store as the other
dialects, as the official ``openai`` SDK speaks it (``shared/dialects.md``).

Create takes multipart/form-data (what the SDK sends) or JSON: ``prompt``, ``model``,
``seconds``, ``size``, ``input_reference`` (an uploaded image, ``input_reference[image_url]``
in a form, ``{"image_url": …}`` in JSON) and reelforge's extensions ``last_reference`` (same
forms), ``seed``, ``enhance_prompt`` (default false: OpenAI uses a prompt as given),
``callback_url``, ``lora``, and vLLM-Omni's generation fields (``negative_prompt``,
``num_inference_steps``, ``guidance_scale``, ``fps``, ``width``, ``height``) where the model
uses them. Any other field is refused, named. Omitted ``seconds``/``size``: 4 s and 720x1280
where the model makes them, else the model's own (``/v1/models`` shows both). A reference of
another aspect than ``size`` is cover-cropped by the engine, never stretched.

Answers are OpenAI's ``Video`` object; errors ``{"error": {message, type, param, code}}``.
The create body is read in ``openai_create.py`` (the one part of the dialect that is long).
"""

from __future__ import annotations

import functools
import re
import time
import uuid
from dataclasses import asdict
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from reelforge.api.deps import CallerDep, IdempotencyKey, Services, ServicesDep
from reelforge.api.dialects import openai_create as create_body
from reelforge.api.dialects.base import Dialect, WebhookPayload
from reelforge.api.files import VideoFile
from reelforge.contract import Status
from reelforge.engines.registry import capabilities
from reelforge.errors import NotFound, Unprocessable
from reelforge.events.stream import STREAM_ANSWER
from reelforge.jobs.model import EventKind, Job
from reelforge.media import stills
from reelforge.request import Dimensions, Resolution
from reelforge.storage.base import Storage
from reelforge.storage.local import LocalStorage

NAME: Final = create_body.NAME
VIDEOS: Final = "/v1/videos"
POLL_AFTER_MS: Final = (250, 1000, 10_000)
"""``openai-poll-after-ms``: least, without an estimate, most."""
STATUSES: Final = {
    Status.QUEUED: "queued",
    Status.GENERATING: "in_progress",
    Status.COMPLETED: "completed",
    Status.ERROR: "failed",
}

router = APIRouter()


# --- shapes (for the OpenAPI document; answers are built as plain data) --------------------


class VideoError(BaseModel):
    code: str
    message: str


class Video(BaseModel):
    id: str
    object: Literal["video"]
    created_at: int
    completed_at: int | None
    expires_at: int | None
    error: VideoError | None
    model: str
    progress: int
    prompt: str
    remixed_from_video_id: str | None
    seconds: str
    size: str
    status: Literal["queued", "in_progress", "completed", "failed"]
    queue_position: int | None = Field(
        description="reelforge extension: 1 = the next of its model's queued jobs to start."
    )
    eta_seconds: int | None = Field(
        description="reelforge extension: expected seconds until the video is done."
    )


class VideoList(BaseModel):
    object: Literal["list"]
    data: list[Video]
    first_id: str | None
    last_id: str | None
    has_more: bool


class VideoDeleted(BaseModel):
    id: str
    object: Literal["video.deleted"]
    deleted: bool


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str


class ErrorBody(BaseModel):
    error: ErrorDetail


def _responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody} for status in (401, *statuses)}


# --- create ------------------------------------------------------------------------------


@router.post(
    VIDEOS,
    response_model=Video,
    responses=_responses(400, 409, 413, 422, 429, 503),
    openapi_extra=create_body.OPENAPI_BODY,
)
async def create(
    request: Request,
    caller: CallerDep,
    services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
) -> Response:
    """Create a video (multipart/form-data or JSON)."""
    fields, form = await create_body.read_fields(request, services.settings.max_body_bytes)
    submission = create_body.submission(fields, form, services.models)
    job = await run_in_threadpool(services.admit, submission, caller, idempotency_key)
    return _video_response(job, services)


# --- read, list, delete ------------------------------------------------------------------


@router.get(VIDEOS + "/{video_id}", response_model=Video, responses=_responses(404))
async def retrieve(video_id: str, caller: CallerDep, services: ServicesDep) -> Response:
    """A video job; unfinished ones carry ``openai-poll-after-ms``."""
    return _video_response(_job(video_id, caller.id, services), services)


@router.get(
    VIDEOS + "/{video_id}/events",
    response_class=Response,
    responses=STREAM_ANSWER | _responses(404, 503),
)
async def events(
    video_id: str,
    caller: CallerDep,
    services: ServicesDep,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    """A live stream of the video job (``text/event-stream``, reelforge's extension): an
    event ``generation`` with the ``Video`` at each change of status or progress, ``id`` the
    event log's (``Last-Event-ID`` resumes), ending after the final one; 503 at the server's
    limit of streams."""
    job = _job(video_id, caller.id, services)
    return services.streams.open(
        job, last_event_id=last_event_id, render=lambda j: video(j, services)
    )


@router.get(VIDEOS, response_model=VideoList, responses=_responses(400))
async def list_videos(
    caller: CallerDep,
    services: ServicesDep,
    after: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Annotated[Literal["asc", "desc"], Query()] = "desc",
) -> dict[str, Any]:
    """The key's videos, whichever dialect made them, newest first by default: a cursor page
    (the next one is ``after=last_id`` while ``has_more``)."""
    jobs = services.store.list(owner=caller.id, limit=limit + 1, after=after, order=order)
    data = [video(job, services) for job in jobs[:limit]]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(jobs) > limit,
    }


@router.delete(VIDEOS + "/{video_id}", response_model=VideoDeleted, responses=_responses(404))
def delete(video_id: str, caller: CallerDep, services: ServicesDep) -> dict[str, Any]:
    """Delete a video: a queued or running job is cancelled first; its video and inputs go."""
    if services.delete_job(video_id, owner=caller.id) is None:
        raise NotFound(f"no video {video_id!r}")
    return {"id": video_id, "object": "video.deleted", "deleted": True}


@router.get(
    VIDEOS + "/{video_id}/content",
    response_class=Response,
    responses={
        200: {"content": {"video/mp4": {}, "image/jpeg": {}}},
        **_responses(404, 422),
    },
)
def content(
    video_id: str,
    caller: CallerDep,
    services: ServicesDep,
    request: Request,
    variant: Annotated[Literal["video", "thumbnail", "spritesheet"], Query()] = "video",
) -> Response:
    """The MP4 (Range supported), a JPEG thumbnail of its middle frame, or a JPEG spritesheet
    of evenly spaced frames. 404 while the job is not completed, 422 if it failed."""
    job = _job(video_id, caller.id, services)
    if job.status is Status.ERROR:
        raise Unprocessable(f"video {video_id!r} failed: {job.error_message}")
    if job.status is not Status.COMPLETED:
        raise NotFound(f"video {video_id!r} is not ready: it is {STATUSES[job.status]}")
    if job.video_key is None or job.purged_at is not None:
        raise NotFound(f"video {video_id!r} was deleted by retention")
    storage, key = services.storage, job.video_key
    if isinstance(storage, LocalStorage):
        path = storage.file(key)
        if variant == "video":
            return VideoFile(path, media_type="video/mp4", filename=path.name)
        return Response(_picture(key, variant, str(path)), media_type="image/jpeg")
    url = storage.video_url(key, base_url=str(request.base_url))
    if variant == "video":
        return RedirectResponse(url)
    return Response(_picture(key, variant, url), media_type="image/jpeg")


@functools.lru_cache(maxsize=64)
def _picture(video_key: str, variant: str, source: str) -> bytes:
    """A thumbnail or spritesheet, made once per process and video (a video never changes)."""
    return stills.thumbnail(source) if variant == "thumbnail" else stills.spritesheet(source)


@router.get("/v1/models", responses=_responses())
async def list_models(_: CallerDep, services: ServicesDep) -> dict[str, Any]:
    """The served models in OpenAI's list shape, with what each can do and the defaults a
    create without ``seconds``/``size`` gets (extensions)."""
    data = []
    for model_id, spec in sorted(services.models.items()):
        entry = {"id": model_id, "object": "model", "created": 0, "owned_by": "reelforge"}
        defaults = {
            "default_seconds": create_body.default_seconds(spec),
            "default_size": str(create_body.default_size(spec)),
        }
        data.append(entry | {"engine": spec.engine} | asdict(capabilities(spec)) | defaults)
    return {"object": "list", "data": data}


def _job(video_id: str, owner: str, services: Services) -> Job:
    job = services.store.get(video_id, owner=owner)
    if job is None:
        raise NotFound(f"no video {video_id!r}")
    return job


# --- answers -----------------------------------------------------------------------------


def video(job: Job, services: Services) -> dict[str, Any]:
    """The wire form of ``job``: OpenAI's ``Video``. ``expires_at``: when retention will
    delete the finished video (null without retention)."""
    done = job.status is Status.COMPLETED and job.finished_at is not None
    days = services.settings.retention_days
    forecast = services.forecasts.of(job)
    error = None
    if job.status is Status.ERROR:
        error = {"code": _snake(job.error_name or "Error"), "message": job.error_message or ""}
    return {
        "id": job.id,
        "object": "video",
        "created_at": int(job.created_at),
        "completed_at": int(job.finished_at) if done and job.finished_at else None,
        "expires_at": int(job.finished_at + days * 86400)
        if done and job.finished_at and days
        else None,
        "error": error,
        "model": job.model,
        "progress": job.progress,
        "prompt": job.request.prompt,
        "remixed_from_video_id": None,
        "seconds": str(job.request.duration_s),
        "size": _shown_size(job),
        "status": STATUSES[job.status],
        "queue_position": forecast.queue_position,
        "eta_seconds": forecast.eta_seconds(time.time()),
    }


def _shown_size(job: Job) -> str:
    """``WxH``: what the engine made, else what was asked; a resolution class sized by a
    keyframe not yet seen stays its name (``768P``)."""
    width, height = job.meta.get("width"), job.meta.get("height")
    size = job.request.size
    if isinstance(width, int) and isinstance(height, int):
        return f"{width}x{height}"
    if isinstance(size, Dimensions):
        return str(size)
    if job.request.first_frame is None and job.request.last_frame is None:
        return "{}x{}".format(*Resolution(size).landscape_size)
    return size.value


def poll_after_ms(job: Job, now: float, eta_seconds: int | None = None) -> int | None:
    """How long a client should wait before asking again, in ms: the job's expected remaining
    time within 250..10000 (from its progress so far while it runs, else from the forecast's
    ``eta_seconds``), 1000 without an estimate; None for a job that is done."""
    if job.status.is_terminal:
        return None
    least, fallback, most = POLL_AFTER_MS
    estimate = float(fallback) if eta_seconds is None else eta_seconds * 1000.0
    if job.status is Status.GENERATING and job.started_at is not None and 0 < job.progress < 100:
        elapsed = max(0.0, now - job.started_at)
        estimate = elapsed * (100 - job.progress) / job.progress * 1000
    return int(min(max(estimate, least), most))


def _video_response(job: Job, services: Services) -> JSONResponse:
    now = time.time()
    after = poll_after_ms(job, now, services.forecasts.of(job).eta_seconds(now))
    headers = {} if after is None else {"openai-poll-after-ms": str(after)}
    return JSONResponse(video(job, services), headers=headers)


def _snake(name: str) -> str:
    """``InvalidImage`` → ``invalid_image``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def render_error(status: int, name: str, message: str, param: str | None = None) -> Response:
    """OpenAI's envelope: ``{"error": {message, type, param, code}}``."""
    kind = {401: "authentication_error", 429: "rate_limit_error"}.get(status)
    if kind is None:
        kind = "server_error" if status >= 500 else "invalid_request_error"
    body = {"message": message, "type": kind, "param": param, "code": _snake(name)}
    return JSONResponse({"error": body}, status_code=status)


WEBHOOK_EVENTS: Final = {
    EventKind.COMPLETED: "video.completed",
    EventKind.ERROR: "video.failed",
    EventKind.CANCELLED: "video.failed",
}
"""The event kinds OpenAI's webhooks tell of, by their type; no others are sent."""


def webhook_payload(
    job: Job, kind: EventKind, storage: Storage, base_url: str
) -> WebhookPayload | None:
    """OpenAI's webhook event: ``{id: "evt_…", object: "event", type, created_at,
    data: {id}}``, sent only when the video is done (``video.completed``/``video.failed``)."""
    event = WEBHOOK_EVENTS.get(kind)
    if event is None:
        return None
    body = {
        "id": f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "type": event,
        "created_at": int(job.updated_at),
        "data": {"id": job.id},
    }
    return WebhookPayload(event=event, body=body)


DIALECT: Final = Dialect(
    name=NAME,
    prefixes=(VIDEOS, "/v1/models"),
    router=router,
    render_error=render_error,
    webhook_payload=webhook_payload,
)
