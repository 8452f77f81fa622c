"""MiniMax's native video API (platform.minimax.io), over the same store as the other dialects:
create a task, query it, retrieve its file.

- ``POST /v1/video_generation`` → ``{"task_id", "base_resp"}``. ``MiniMax-Hailuo-02`` is the
  model that answers ``minimax/hailuo-02``; any other name must be a served model id (a
  registry entry named ``T2V-01`` serves ``T2V-01``). MiniMax's rules: 6 or 10 s at 768P, 6 s
  at 1080P; 512P is refused (reelforge makes 768P and 1080P). Unknown fields are refused.
  ``aigc_watermark`` stamps a visible "AI-generated" mark (``media.watermark``);
  ``fast_pretreatment`` changes nothing (``prompt_optimizer`` asks ``reelforge.optimizer``).
- ``GET /v1/query/video_generation?task_id=`` → ``{task_id, status, file_id, video_width,
  video_height, base_resp}``; ``file_id`` (the task id) and the size only on ``Success``.
- ``GET /v1/files/retrieve?file_id=`` → ``{"file": {...}, "base_resp"}``; ``download_url`` is
  the signed link to the MP4.

Errors are answered as MiniMax answers them: HTTP 200 with a non-zero
``base_resp.status_code`` and a ``status_msg`` naming the field (``render_error``); only a
route that does not exist (404) or a method a route does not take (405) keeps its status.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Annotated, Any, Final

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from reelforge.api.accept import Submission, image_input, webhook_url
from reelforge.api.deps import CallerDep, IdempotencyKey, ServicesDep
from reelforge.api.dialects.base import Dialect, StrictBody, WebhookPayload
from reelforge.contract import DEFAULT_MODEL, MAX_PROMPT_CHARS, Status
from reelforge.errors import InvalidRequest
from reelforge.jobs.model import EventKind, Job, Phase
from reelforge.request import JobRequest, Resolution
from reelforge.storage.base import Storage

NAME: Final = "minimax"
CREATE: Final = "/v1/video_generation"
QUERY: Final = "/v1/query/video_generation"
RETRIEVE: Final = "/v1/files/retrieve"
HAILUO_02: Final = "MiniMax-Hailuo-02"
"""MiniMax's name for the model that answers ``minimax/hailuo-02`` here."""
DURATIONS: Final[Mapping[str, tuple[int, ...]]] = {"768P": (6, 10), "1080P": (6,)}
"""Resolution → the clip lengths MiniMax offers at it, in seconds."""
MAX_ID_LENGTH: Final = 64
TaskId = Annotated[str, Query(min_length=1, max_length=MAX_ID_LENGTH)]

OK: Final = 0
UNKNOWN_ERROR: Final = 1000
RATE_LIMITED: Final = 1002
AUTHENTICATION_FAILED: Final = 1004
INVALID_PARAMETERS: Final = 2013
CODES: Final[Mapping[int, int]] = {
    400: INVALID_PARAMETERS,
    401: AUTHENTICATION_FAILED,
    404: INVALID_PARAMETERS,
    409: RATE_LIMITED,  # IdempotencyConflict: try again shortly, as after a rate limit
    413: INVALID_PARAMETERS,
    429: RATE_LIMITED,
    503: RATE_LIMITED,  # QueueFull
}
"""reelforge's HTTP status of an error → MiniMax's ``base_resp.status_code`` (else 1000)."""
BASE_OK: Final = {"status_code": OK, "status_msg": "success"}

router = APIRouter()


# --- create ------------------------------------------------------------------------------


class Create(StrictBody):
    """Body of ``POST /v1/video_generation``: MiniMax's fields, and ``seed`` (reelforge's)."""

    model: str = Field(description="`MiniMax-Hailuo-02`, or a served model id.")
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    prompt_optimizer: bool = True
    fast_pretreatment: bool = Field(False, description="Accepted; changes nothing.")
    duration: int = Field(6, description="Seconds: 6 or 10 at 768P, 6 at 1080P.")
    resolution: str = "768P"
    first_frame_image: str | None = Field(None, description="URL or base64 image.")
    last_frame_image: str | None = Field(None, description="URL or base64 image.")
    callback_url: str | None = Field(None, description="Kept with the task for its events.")
    aigc_watermark: bool = Field(False, description='A visible "AI-generated" mark.')
    seed: int | None = Field(None, ge=0, lt=2**32, description="reelforge extension.")

    def submission(self) -> Submission:
        """The body as a dialect-free submission, MiniMax's rules checked."""
        resolution = _resolution(self.resolution, self.duration)
        return Submission(
            model=DEFAULT_MODEL if self.model == HAILUO_02 else self.model,
            request=JobRequest(
                prompt=self.prompt,
                duration_s=self.duration,
                size=resolution,
                seed=self.seed,
                prompt_optimizer=self.prompt_optimizer,
                watermark=self.aigc_watermark,
            ),
            dialect=NAME,
            first=image_input(self.first_frame_image, "first_frame_image"),
            last=image_input(self.last_frame_image, "last_frame_image"),
            fields={
                "duration_s": "duration",
                "size": "resolution",
                "first_frame": "first_frame_image",
                "last_frame": "last_frame_image",
            },
            callback_url=webhook_url(self.callback_url),
        )


def _resolution(resolution: str, duration: int) -> Resolution:
    """``resolution`` as reelforge's class, refusing what MiniMax (or reelforge) does not make
    and a ``duration`` MiniMax does not offer at it."""
    lengths = DURATIONS.get(resolution)
    if lengths is None:
        why = " (MiniMax's 512P is not made here)" if resolution == "512P" else ""
        raise InvalidRequest("resolution", f"{resolution!r} is not 768P or 1080P{why}")
    if duration not in lengths:
        allowed = " or ".join(str(seconds) for seconds in lengths)
        raise InvalidRequest(
            "duration", f"{duration} s is not made at {resolution}; use {allowed} seconds"
        )
    return Resolution(resolution)


class Created(BaseModel):
    task_id: str
    base_resp: dict[str, Any]


class Refused(BaseModel):
    """Any refusal of this dialect, at HTTP 200 (``render_error``)."""

    base_resp: dict[str, Any]


@router.post(CREATE, response_model=Created | Refused)
async def create(
    body: Create, caller: CallerDep, services: ServicesDep, idempotency_key: IdempotencyKey = None
) -> Created:
    """Queue a generation; its ``task_id`` is also its id on every other dialect. With a
    ``callback_url``, only once that URL answered MiniMax's challenge (``events.challenge``)."""
    submission = await run_in_threadpool(body.submission)
    if submission.callback_url is not None:
        await services.challenges.verify(submission.callback_url, owner=caller.id)
    job = await run_in_threadpool(services.admit, submission, caller, idempotency_key)
    return Created(task_id=job.id, base_resp=BASE_OK)


# --- query and retrieve ------------------------------------------------------------------


def task_status(job: Job) -> str:
    """MiniMax's name for the state of ``job``: ``Queueing`` while queued; ``Preparing`` once
    claimed, until its inputs are loaded; ``Processing`` while it is generated, encoded and
    stored; then ``Success`` or ``Fail``."""
    if job.status is Status.QUEUED:
        return "Queueing"
    if job.status is Status.GENERATING:
        preparing = job.phase in (None, Phase.PREPARING, Phase.OPTIMIZING)
        return "Preparing" if preparing else "Processing"
    return "Success" if job.status is Status.COMPLETED else "Fail"


def _video(job: Job) -> Mapping[str, Any]:
    """What the worker recorded about the MP4 (``width``, ``height``, ``bytes``)."""
    video = job.meta.get("video")
    return video if isinstance(video, Mapping) else {}


@router.get(QUERY)
async def query(task_id: TaskId, caller: CallerDep, services: ServicesDep) -> dict[str, Any]:
    """A task's state; ``file_id`` (equal to the task id) and the video's size in pixels once
    it is ``Success``; reelforge's ``error`` (name, message) once it is ``Fail``; reelforge's
    ``queue_position`` and ``eta_seconds`` while it is unfinished (null: not queued, or no
    estimate yet)."""
    job = services.store.get(task_id, owner=caller.id)
    if job is None:
        raise InvalidRequest("task_id", f"no task {task_id!r}")
    answer = query_answer(job)
    if not job.status.is_terminal:
        forecast = services.forecasts.of(job)
        answer["queue_position"] = forecast.queue_position
        answer["eta_seconds"] = forecast.eta_seconds(time.time())
    return answer


def query_answer(job: Job) -> dict[str, Any]:
    """The query response's shape for ``job`` (also what a ``callback_url`` is sent)."""
    status = task_status(job)
    answer: dict[str, Any] = {"task_id": job.id, "status": status}
    if status == "Success":
        video = _video(job)
        answer |= {"file_id": job.id, "video_width": video.get("width", 0)}
        answer["video_height"] = video.get("height", 0)
    elif status == "Fail":
        answer["error"] = {"name": job.error_name or "Error", "message": job.error_message or ""}
    return answer | {"base_resp": BASE_OK}


@router.get(RETRIEVE)
async def retrieve(
    file_id: TaskId, caller: CallerDep, services: ServicesDep, request: Request
) -> dict[str, Any]:
    """The finished video of task ``file_id``: its size in bytes, when it was made (epoch
    seconds) and a signed, expiring ``download_url``."""
    job = services.store.get(file_id, owner=caller.id)
    if job is None:
        raise InvalidRequest("file_id", f"no file {file_id!r}")
    if job.status is not Status.COMPLETED or job.video_key is None:
        raise InvalidRequest("file_id", f"task {file_id!r} has no file ({task_status(job)})")
    if job.purged_at is not None:
        raise InvalidRequest("file_id", f"file {file_id!r} was deleted by retention")
    url = services.storage.video_url(job.video_key, base_url=str(request.base_url))
    made = job.finished_at if job.finished_at is not None else job.updated_at
    file = {
        "file_id": job.id,
        "bytes": _video(job).get("bytes"),
        "created_at": int(made),
        "filename": f"{job.id}.mp4",
        "purpose": "video_generation",
        "download_url": url,
    }
    return {"file": file, "base_resp": BASE_OK}


# --- errors ------------------------------------------------------------------------------


def render_error(status: int, name: str, message: str, param: str | None = None) -> Response:
    """MiniMax's envelope: HTTP 200 and ``{"base_resp": {"status_code", "status_msg"}}``, the
    code from ``CODES``; a missing route or method (``HTTPError`` 404/405) keeps its status.
    ``param`` is already named in ``message``, as MiniMax's messages name their field."""
    if name == "HTTPError" and status in (404, 405):
        return _base_resp(UNKNOWN_ERROR, message, status)
    return _base_resp(CODES.get(status, UNKNOWN_ERROR), message)


def _base_resp(code: int, message: str, http_status: int = 200) -> Response:
    return JSONResponse({"base_resp": {"status_code": code, "status_msg": message}}, http_status)


def webhook_payload(
    job: Job, kind: EventKind, storage: Storage, base_url: str
) -> WebhookPayload | None:
    """MiniMax pushes the query answer on each status change."""
    answer = query_answer(job)
    return WebhookPayload(event=answer["status"], body=answer)


DIALECT: Final = Dialect(
    name=NAME,
    prefixes=(CREATE, "/v1/query/", "/v1/files/"),
    router=router,
    render_error=render_error,
    webhook_payload=webhook_payload,
)
