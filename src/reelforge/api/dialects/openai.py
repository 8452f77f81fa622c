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
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Annotated, Any, Final, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from reelforge.api.accept import ImageInput, Submission, accept, image_input
from reelforge.api.deps import CallerDep, Services, ServicesDep
from reelforge.api.dialects.base import Dialect
from reelforge.contract import DEFAULT_MODEL, MAX_PROMPT_CHARS, Status
from reelforge.engines.registry import capabilities
from reelforge.errors import InvalidRequest, NotFound, Unprocessable
from reelforge.jobs.model import Job
from reelforge.media import stills
from reelforge.request import DEFAULT_SIZE, Dimensions, JobRequest, OutputSize, Resolution
from reelforge.storage.local import LocalStorage

NAME: Final = "openai"
VIDEOS: Final = "/v1/videos"
DEFAULT_SECONDS: Final = 4
DEFAULT_DIMENSIONS: Final = Dimensions(720, 1280)
POLL_AFTER_MS: Final = (250, 1000, 10_000)
"""``openai-poll-after-ms``: least, without an estimate, most."""
STATUSES: Final = {
    Status.QUEUED: "queued",
    Status.GENERATING: "in_progress",
    Status.COMPLETED: "completed",
    Status.ERROR: "failed",
}
OPTIONS: Final = ("negative_prompt", "num_inference_steps", "guidance_scale")
"""vLLM-Omni's generation fields that are model options (checked against the model)."""
REFERENCES: Final = {"input_reference": "first_frame", "last_reference": "last_frame"}
FIELDS: Final = frozenset(
    {"prompt", "model", "seconds", "size", "seed", "enhance_prompt", "callback_url", "lora"}
    | {"fps", "width", "height", *OPTIONS}
    | {f"{ref}{part}" for ref in REFERENCES for part in ("", "[image_url]", "[file_id]")}
)
FORM_TYPES: Final = ("multipart/form-data", "application/x-www-form-urlencoded")
_SIZE: Final = re.compile(r"([1-9][0-9]{0,4})x([1-9][0-9]{0,4})")
_WHOLE: Final = re.compile(r"[0-9]{1,10}")
_NUMBER: Final = re.compile(r"-?[0-9]{1,10}(\.[0-9]{1,10})?")

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


@router.post(VIDEOS, response_model=Video, responses=_responses(400, 413))
async def create(request: Request, caller: CallerDep, services: ServicesDep) -> Response:
    """Create a video (multipart/form-data or JSON)."""
    fields, form = await _fields(request, services.settings.max_body_bytes)
    submission = _submission(fields, form, services)
    job = await run_in_threadpool(
        accept,
        submission,
        owner=caller.id,
        models=services.models,
        max_attempts=services.settings.max_attempts,
        queue=services.store,
        storage=services.storage,
    )
    return _video_response(job, services)


async def _fields(request: Request, limit: int) -> tuple[dict[str, Any], bool]:
    """The body's fields (uploaded files as bytes, JSON's reference objects as bracketed
    keys) and whether it was a form (every value text)."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(FORM_TYPES):
        fields: dict[str, Any] = {}
        async with request.form(max_part_size=limit) as form:  # closes the uploads' files
            for key, value in form.multi_items():
                fields[key] = await value.read() if isinstance(value, UploadFile) else value
        return fields, True
    if not content_type.startswith("application/json"):
        raise InvalidRequest("body", "send multipart/form-data or application/json")
    try:
        body = json.loads(await request.body())
    except ValueError as exc:
        raise InvalidRequest("body", f"not valid JSON ({exc})") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("body", "must be a JSON object")
    for ref in REFERENCES:
        if body.get(ref) is not None:
            value = body.pop(ref)
            if not isinstance(value, dict) or not value or set(value) - {"image_url", "file_id"}:
                raise InvalidRequest(ref, 'must be an object {"image_url": "<URL or data URL>"}')
            body.update({f"{ref}[{part}]": item for part, item in value.items()})
    return {key: value for key, value in body.items() if value is not None}, False


def _submission(fields: Mapping[str, Any], form: bool, services: Services) -> Submission:
    """The create body as a submission: unknown fields refused, types checked, defaults
    filled from the model's capabilities (the model's own rules are ``accept``'s)."""
    unknown = sorted(set(fields) - FIELDS)
    if unknown:
        others = f" (nor are {', '.join(unknown[1:])})" if len(unknown) > 1 else ""
        raise InvalidRequest(unknown[0], f"is not a field of this API{others}")
    model = _text(fields, "model") or DEFAULT_MODEL
    spec = services.models.get(model)
    if spec is None:
        known = ", ".join(sorted(services.models))
        raise InvalidRequest("model", f"{model!r} is not served here; known: {known}")
    prompt = _text(fields, "prompt")
    if prompt is None or not 1 <= len(prompt) <= MAX_PROMPT_CHARS:
        raise InvalidRequest("prompt", f"required, 1 to {MAX_PROMPT_CHARS} characters")
    options = {name: _option(fields, name, form) for name in OPTIONS if name in fields}
    seconds = _integer(fields, "seconds", text=True)
    request = JobRequest(
        prompt=prompt,
        duration_s=default_seconds(model, services) if seconds is None else seconds,
        size=_size(fields, form) or default_size(model, services),
        fps=_integer(fields, "fps", text=form),
        seed=_integer(fields, "seed", text=form, high=2**32 - 1),
        prompt_optimizer=_boolean(fields, "enhance_prompt", form),
        options=options,
    )
    return Submission(
        model=model,
        request=request,
        dialect=NAME,
        first=_reference(fields, "input_reference"),
        last=_reference(fields, "last_reference"),
        fields={"duration_s": "seconds", "prompt_optimizer": "enhance_prompt"}
        | {canonical: ref for ref, canonical in REFERENCES.items()},
        callback_url=_callback_url(fields),
        lora=_text(fields, "lora"),
    )


def default_seconds(model: str, services: Services) -> int:
    """OpenAI's 4 s where the model makes it, else the shortest it makes."""
    can = capabilities(services.models[model])
    return (
        DEFAULT_SECONDS
        if can.min_seconds <= DEFAULT_SECONDS <= can.max_seconds
        else can.min_seconds
    )


def default_size(model: str, services: Services) -> OutputSize:
    """OpenAI's 720x1280 where the model makes it, else reelforge's 768P."""
    can = capabilities(services.models[model])
    fits = can.size_refusal(DEFAULT_DIMENSIONS.width, DEFAULT_DIMENSIONS.height) is None
    return DEFAULT_DIMENSIONS if fits else DEFAULT_SIZE


def _text(fields: Mapping[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidRequest(name, f"must be a string (got {_shown(value)})")
    return value


def _integer(fields: Mapping[str, Any], name: str, *, text: bool, high: int = 10**6) -> int | None:
    """A whole number from 0 to ``high``; given as text where ``text`` (a form, ``seconds``)."""
    value = fields.get(name)
    if value is None:
        return None
    if text and isinstance(value, str) and _WHOLE.fullmatch(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise InvalidRequest(name, f"must be a whole number from 0 to {high} (got {_shown(value)})")
    return value


def _boolean(fields: Mapping[str, Any], name: str, form: bool) -> bool:
    value = fields.get(name, False)
    if form and value in ("true", "false"):
        return bool(value == "true")
    if not isinstance(value, bool):
        raise InvalidRequest(name, f"must be true or false (got {_shown(value)})")
    return value


def _option(fields: Mapping[str, Any], name: str, form: bool) -> str | int | float:
    """A model option: ``negative_prompt`` text, ``num_inference_steps`` a whole number,
    ``guidance_scale`` a number."""
    if name == "negative_prompt":
        return _text(fields, name) or ""
    if name == "num_inference_steps":
        return _integer(fields, name, text=form, high=1000) or 0
    value = fields[name]
    if form and isinstance(value, str) and _NUMBER.fullmatch(value):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
        raise InvalidRequest(name, f"must be a number from 0 to 100 (got {_shown(value)})")
    return value


def _size(fields: Mapping[str, Any], form: bool) -> Dimensions | None:
    """``size`` as ``WxH``, or vLLM-Omni's ``width`` and ``height`` (both, agreeing with
    ``size`` if it is given too)."""
    text = _text(fields, "size")
    size = None
    if text is not None:
        match = _SIZE.fullmatch(text)
        if match is None:
            raise InvalidRequest(
                "size", f"must be WIDTHxHEIGHT in pixels, e.g. 1280x720 (got {text!r})"
            )
        size = Dimensions(int(match[1]), int(match[2]))
    width, height = _integer(fields, "width", text=form), _integer(fields, "height", text=form)
    if width is None and height is None:
        return size
    if width is None or height is None:
        raise InvalidRequest(
            "width" if width is None else "height", "give width and height together"
        )
    if size is not None and size != Dimensions(width, height):
        raise InvalidRequest("size", f"{size} disagrees with width x height {width}x{height}")
    return Dimensions(width, height)


def _reference(fields: Mapping[str, Any], name: str) -> ImageInput | None:
    """An uploaded image, or ``[image_url]`` (a URL or data URL); ``[file_id]`` is refused."""
    if f"{name}[file_id]" in fields:
        raise InvalidRequest(
            name,
            "file ids are not supported (reelforge has no files API); "
            f"upload the image or send {name}[image_url]",
        )
    upload, url = fields.get(name), _text(fields, f"{name}[image_url]")
    if upload is not None and url is not None:
        raise InvalidRequest(name, f"send the file or {name}[image_url], not both")
    if url is not None:
        return image_input(url, name)
    if upload is None:
        return None
    if not isinstance(upload, bytes):
        raise InvalidRequest(
            name, f"must be an uploaded image file; for a URL send {name}[image_url]"
        )
    return ImageInput(field=name, data=upload)


def _callback_url(fields: Mapping[str, Any]) -> str | None:
    url = _text(fields, "callback_url")
    if url is not None and not url.lower().startswith(("http://", "https://")):
        raise InvalidRequest("callback_url", f"must be an http(s) URL (got {url[:80]!r})")
    return url


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# --- read, list, delete ------------------------------------------------------------------


@router.get(VIDEOS + "/{video_id}", response_model=Video, responses=_responses(404))
async def retrieve(video_id: str, caller: CallerDep, services: ServicesDep) -> Response:
    """A video job; unfinished ones carry ``openai-poll-after-ms``."""
    return _video_response(_job(video_id, caller.id, services), services)


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
            return FileResponse(path, media_type="video/mp4", filename=path.name)
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
        size = default_size(model_id, services)
        entry = {"id": model_id, "object": "model", "created": 0, "owned_by": "reelforge"}
        defaults = {
            "default_seconds": default_seconds(model_id, services),
            "default_size": str(size),
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


def poll_after_ms(job: Job, now: float) -> int | None:
    """How long a client should wait before asking again, in ms: the job's expected remaining
    time (from its progress so far) within 250..10000, 1000 without an estimate; None for a
    job that is done."""
    if job.status.is_terminal:
        return None
    least, fallback, most = POLL_AFTER_MS
    estimate = float(fallback)
    if job.status is Status.GENERATING and job.started_at is not None and 0 < job.progress < 100:
        elapsed = max(0.0, now - job.started_at)
        estimate = elapsed * (100 - job.progress) / job.progress * 1000
    return int(min(max(estimate, least), most))


def _video_response(job: Job, services: Services) -> JSONResponse:
    after = poll_after_ms(job, time.time())
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


DIALECT: Final = Dialect(
    name=NAME, prefixes=(VIDEOS, "/v1/models"), router=router, render_error=render_error
)
