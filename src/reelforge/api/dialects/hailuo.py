"""The Hailuo-02 dialect of the AI/ML API (``shared/contract.md``): create and poll on the
legacy and the unified route, over one store (an id made on one route is answered on the
other), plus reelforge's cancel and model list.

Its rules: 6 or 10 s, 768P or 1080P, 10 s only at 768P, the video sized by the first image's
aspect. Types are strict: a duration of ``"6"``, ``6.0`` or ``6.5`` is refused, not converted.
A field the body does not define is refused, naming it; both routes take both routes' names
for the first frame (``first_frame_image``, ``image_url``) and the optimizer flag
(``prompt_optimizer``, ``enhance_prompt``). Errors are ``{"error": {"name", "message"}}``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Annotated, Any, ClassVar, Final, Literal
from urllib.parse import unquote_plus

from fastapi import APIRouter, Header, Query, Request, Response, Security
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, Field
from pydantic_core import PydanticCustomError
from starlette.types import Receive, Scope, Send

from reelforge.api.accept import Submission, image_input, webhook_url
from reelforge.api.deps import (
    KEY_ID,
    CallerDep,
    IdempotencyKey,
    Services,
    ServicesDep,
    services_of,
)
from reelforge.api.dialects.base import Dialect, StrictBody, WebhookPayload
from reelforge.api.headers import SECURITY_HEADERS
from reelforge.api.openapi import BEARER, ErrorAnswer, ErrorInfo, error_responses
from reelforge.contract import (
    MAX_IMAGE_BYTES,
    MAX_IMAGE_RATIO,
    MAX_PROMPT_CHARS,
    MIN_IMAGE_RATIO,
    MIN_IMAGE_SHORT_SIDE,
    Status,
)
from reelforge.engines.registry import ModelSpec, capabilities
from reelforge.errors import (
    IdempotencyConflict,
    IdempotencyMismatch,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    QueueFull,
    RateLimited,
    Unauthorized,
)
from reelforge.events.stream import STREAM_ANSWER
from reelforge.jobs.model import EventKind, Job
from reelforge.media.camera import Movement
from reelforge.request import JobRequest, Resolution
from reelforge.storage.base import Storage

NAME: Final = "hailuo"
LEGACY: Final = "/v2/generate/video/minimax/generation"
UNIFIED: Final = "/v2/video/generations"
DURATIONS: Final = (6, 10)
"""Allowed clip lengths, in seconds."""
MAX_ID_LENGTH: Final = 64
GenerationId = Annotated[str, Query(min_length=1, max_length=MAX_ID_LENGTH)]
LIST_LIMIT: Final = (1, 100, 20)
"""A list page's ``limit``: least, most, default."""
_ID_SCHEMA: Final = {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH}
POLL_QUERY: Final[dict[str, Any]] = {
    "parameters": [
        {"name": "generation_id", "in": "query", "required": False, "schema": _ID_SCHEMA},
        {"name": "after", "in": "query", "required": False, "schema": _ID_SCHEMA},
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
        },
    ]
}
"""The poll routes' query, for the OpenAPI document (``fetch`` reads it by hand): one
generation by ``generation_id``, or without it a page of the key's (reelforge's extension)."""

router = APIRouter()
_AUTHENTICATED: Final = (InvalidRequest, Unauthorized)
"""What every route of this dialect can answer (a malformed query or body; a bad key)."""


def check_length(duration: int, resolution: Resolution, *, field: str = "duration") -> None:
    """Refuse a duration the contract does not offer, or 10 s at 1080P."""
    if duration not in DURATIONS:
        raise InvalidRequest(field, f"{duration} is not an allowed duration; use 6 or 10 seconds")
    if duration == 10 and resolution is not Resolution.P768:
        raise InvalidRequest(field, f"10 s is available only at 768P, not {resolution.value}")


# --- bodies ------------------------------------------------------------------------------


def _exact_int(value: object) -> object:
    """Let only integers reach a literal: strict pydantic matches ``Literal[6, 10]`` by value,
    so JSON ``6.0`` would pass as 6."""
    if isinstance(value, float):
        raise PydanticCustomError("literal_error", "Input should be 6 or 10")
    return value


Duration = Annotated[Literal[6, 10], BeforeValidator(_exact_int)]
FIRST_FRAME_NAMES: Final = ("first_frame_image", "image_url")
OPTIMIZER_NAMES: Final = ("prompt_optimizer", "enhance_prompt")
"""The two routes' names for one field each (legacy, unified): both routes take both."""


class _Create(StrictBody):
    """A create body. Both routes take both routes' names for the first frame and the
    optimizer flag; a field given under both names must have one value."""

    own_names: ClassVar[int]
    """Index into ``FIRST_FRAME_NAMES``/``OPTIMIZER_NAMES`` of this route's own name."""

    model: str = Field(description="Model id, e.g. `minimax/hailuo-02`.")
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    first_frame_image: str | None = Field(
        None, description="First frame: URL or base64 image (the legacy route's name)."
    )
    image_url: str | None = Field(
        None, description="First frame: URL or base64 image (the unified route's name)."
    )
    last_image_url: str | None = Field(None, description="Last frame: URL or base64 image.")
    duration: Duration = Field(6, description="Seconds.")
    resolution: Literal["768P", "1080P"] = "768P"
    prompt_optimizer: bool = Field(True, description="Rewrite the prompt (legacy route's name).")
    enhance_prompt: bool = Field(True, description="Rewrite the prompt (unified route's name).")
    seed: int | None = Field(None, ge=0, lt=2**32, description="reelforge extension.")
    callback_url: str | None = Field(
        None, description="reelforge extension: where the status changes are POSTed."
    )

    def submission(self) -> Submission:
        """The body as a dialect-free submission, the contract's rules checked."""
        first_field, first_image = self._one_value(FIRST_FRAME_NAMES)
        _, optimizer = self._one_value(OPTIMIZER_NAMES)
        resolution = Resolution(self.resolution)
        check_length(self.duration, resolution)
        return Submission(
            model=self.model,
            request=JobRequest(
                prompt=self.prompt,
                duration_s=self.duration,
                size=resolution,
                seed=self.seed,
                prompt_optimizer=optimizer,
            ),
            dialect=NAME,
            first=image_input(first_image, first_field),
            last=image_input(self.last_image_url, "last_image_url"),
            fields={
                "duration_s": "duration",
                "size": "resolution",
                "first_frame": first_field,
                "last_frame": "last_image_url",
            },
            callback_url=webhook_url(self.callback_url),
        )

    def _one_value(self, names: tuple[str, str]) -> tuple[str, Any]:
        """The value of a field the body may name either way, and the name it came under
        (this route's own unless only the other was sent). ``InvalidRequest`` when both
        names were sent with different values (``null`` counts as not sent)."""
        own, other = names[self.own_names], names[1 - self.own_names]
        sent = [
            n for n in (own, other) if n in self.model_fields_set and getattr(self, n) is not None
        ]
        if len(sent) == 2 and getattr(self, own) != getattr(self, other):
            raise InvalidRequest(
                own, f"given twice with different values, as {own} and as {other}; send one"
            )
        name = sent[0] if sent else own
        return name, getattr(self, name)


class LegacyCreate(_Create):
    """Body of ``POST /v2/generate/video/minimax/generation``."""

    own_names = 0


class UnifiedCreate(_Create):
    """Body of ``POST /v2/video/generations``."""

    own_names = 1


class LegacyCreated(BaseModel):
    generation_id: str
    status: Status


class UnifiedCreated(BaseModel):
    id: str
    status: Status


class VideoLink(BaseModel):
    url: str


class Generation(BaseModel):
    """What a poll answers. ``progress``, ``model`` and the times are extensions."""

    id: str
    status: Status
    video: VideoLink | None
    error: ErrorInfo | None
    meta: dict[str, Any] | None
    progress: int = Field(description="Percent done, 0..100.")
    model: str
    created_at: float
    finished_at: float | None
    queue_position: int | None = Field(
        description="1 = the next of its model's queued jobs to start; null unless queued."
    )
    eta_seconds: int | None = Field(
        description="Expected seconds until the video is done; null when finished or unknown."
    )


class GenerationPage(BaseModel):
    """A page of the key's generations, newest first (reelforge's extension): the next page is
    ``after=last_id`` while ``has_more``."""

    data: list[Generation]
    has_more: bool
    last_id: str | None


class Deleted(BaseModel):
    """The answer to ``DELETE …&purge=true``."""

    id: str
    deleted: bool


# --- routes ------------------------------------------------------------------------------


_POLL_HEADERS: Final = ((b"content-type", b"application/json"), *SECURITY_HEADERS)


class Poll:
    """The poll as a bare ASGI app: one indexed read under WAL, on the event loop, never
    waiting.

    The most requested route, answered before FastAPI's middleware and routing
    (``HOT_ROUTES``, ``api.hot.HotRoutes``). It reads its key, query and host from the ASGI
    scope itself: FastAPI's route matching, dependency solving and validation, and
    Starlette's request objects, would more than double its cost per request
    (``bench/service.py``). Errors it raises are rendered like every other one. It skips
    ``api.headers.SecurityHeaders`` too, so it sends the security headers itself.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = _poll_answer(scope["app"].state.services, scope)
        headers = [*_POLL_HEADERS, (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _poll_answer(services: Services, scope: Scope) -> bytes:
    """The JSON answer to the poll in ``scope`` (one generation, or a page of them without
    ``generation_id``); reelforge errors for a refusal."""
    authorization, host = _headers(scope)
    caller = services.caller(authorization)
    scope[KEY_ID] = caller.id  # for the request's log line (``api.observe``)
    base_url = _base_url(scope, host)
    generation_id = _query_value(scope, "generation_id")
    if generation_id is None:
        answer = _page(services, scope, owner=caller.id, base_url=base_url)
    else:
        job = services.store.get(_generation_id(generation_id), owner=caller.id)
        if job is None:
            raise NotFound(f"no generation {generation_id!r}")
        answer = view(job, services, base_url=base_url)
    return json.dumps(answer, separators=(",", ":")).encode()


def _page(services: Services, scope: Scope, *, owner: str, base_url: str) -> dict[str, Any]:
    """A ``GenerationPage`` of ``owner``'s jobs after the query's ``after``, newest first."""
    after = _query_value(scope, "after")
    if after is not None:
        after = _generation_id(after, field="after")
    limit = list_limit(_query_value(scope, "limit"))
    jobs = services.store.list(owner=owner, limit=limit + 1, after=after)
    data = [view(job, services, base_url=base_url) for job in jobs[:limit]]
    return {
        "data": data,
        "has_more": len(jobs) > limit,
        "last_id": data[-1]["id"] if data else None,
    }


def list_limit(value: str | None) -> int:
    """A list page's ``limit`` query parameter: an integer in 1..100, 20 when absent."""
    least, most, default = LIST_LIMIT
    if value is None:
        return default
    if not value.isascii() or not value.isdigit() or not least <= int(value) <= most:
        raise InvalidRequest("limit", f"must be an integer from {least} to {most} (got {value!r})")
    return int(value)


def _headers(scope: Scope) -> tuple[str | None, str | None]:
    """The ``Authorization`` and ``Host`` headers of the request, if sent."""
    authorization = host = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorization = value.decode("latin-1")
        elif name == b"host":
            host = value.decode("latin-1")
    return authorization, host


def _query_value(scope: Scope, name: str) -> str | None:
    """The last value of query parameter ``name`` (as Starlette's ``query_params`` gives)."""
    found = None
    for pair in scope["query_string"].decode("latin-1").split("&"):
        key, _, value = pair.partition("=")
        if "%" in pair or "+" in pair:
            key, value = unquote_plus(key), unquote_plus(value)
        if key == name:
            found = value
    return found


def _base_url(scope: Scope, host: str | None) -> str:
    """The URL the app is served at, as Starlette's ``Request.base_url`` makes it."""
    scheme = scope.get("scheme", "http")
    if host is None:
        server_host, port = scope.get("server") or ("localhost", None)
        default = {"http": 80, "https": 443}.get(scheme)
        host = server_host if port == default else f"{server_host}:{port}"
    return f"{scheme}://{host}{scope.get('root_path', '')}/"


_POLL_ROUTE: Final[dict[str, Any]] = {
    "response_model": Generation | GenerationPage,
    "openapi_extra": POLL_QUERY,
    "dependencies": [Security(BEARER)],
    "responses": error_responses(*_AUTHENTICATED, NotFound, model=ErrorAnswer),
}


@router.get(LEGACY, **_POLL_ROUTE)
@router.get(UNIFIED, **_POLL_ROUTE)
async def poll(request: Request) -> Response:
    """Poll a generation; without ``generation_id``, list the key's, newest first (``after``,
    ``limit``; reelforge's extension). (Requests usually reach ``Poll`` first; this route
    answers the same where they do not, e.g. under a proxy's ``root_path``, and documents the
    route.)"""
    body = _poll_answer(services_of(request), request.scope)
    return Response(body, media_type="application/json")


HOT_ROUTES: Final = {LEGACY: Poll(), UNIFIED: Poll()}
"""GET paths answered before FastAPI's stack (``api.hot.HotRoutes``)."""


def _generation_id(value: str, *, field: str = "generation_id") -> str:
    """A generation id from the query, checked as ``GenerationId`` would be."""
    if not 1 <= len(value) <= MAX_ID_LENGTH:
        raise InvalidRequest(field, f"must be 1 to {MAX_ID_LENGTH} characters (got {len(value)})")
    return value


@router.get(LEGACY + "/events", response_class=Response, responses=STREAM_ANSWER)
@router.get(UNIFIED + "/events", response_class=Response, responses=STREAM_ANSWER)
async def events(
    generation_id: GenerationId,
    caller: CallerDep,
    services: ServicesDep,
    request: Request,
    last_event_id: Annotated[str | None, Header()] = None,
) -> Response:
    """A live stream of the generation (``text/event-stream``, reelforge's extension): an
    event ``generation`` with the poll answer at each change of status or progress, ``id``
    the event log's (send it back as ``Last-Event-ID`` to resume), ending after the final
    one; 503 when the server streams its most already (poll instead)."""
    job = services.store.get(generation_id, owner=caller.id)
    if job is None:
        raise NotFound(f"no generation {generation_id!r}")
    base_url = str(request.base_url)
    return services.streams.open(
        job, last_event_id=last_event_id, render=lambda j: view(j, services, base_url=base_url)
    )


_CREATE_ERRORS: Final = error_responses(
    *_AUTHENTICATED,
    PayloadTooLarge,
    IdempotencyMismatch,
    IdempotencyConflict,
    RateLimited,
    QueueFull,
    model=ErrorAnswer,
)


@router.post(LEGACY, response_model=LegacyCreated, responses=_CREATE_ERRORS)
def create_legacy(
    body: LegacyCreate,
    caller: CallerDep,
    services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
) -> LegacyCreated:
    job = services.admit(body.submission(), caller, idempotency_key)
    return LegacyCreated(generation_id=job.id, status=job.status)


@router.post(UNIFIED, response_model=UnifiedCreated, responses=_CREATE_ERRORS)
def create_unified(
    body: UnifiedCreate,
    caller: CallerDep,
    services: ServicesDep,
    idempotency_key: IdempotencyKey = None,
) -> UnifiedCreated:
    job = services.admit(body.submission(), caller, idempotency_key)
    return UnifiedCreated(id=job.id, status=job.status)


_CANCEL_ERRORS: Final = error_responses(*_AUTHENTICATED, NotFound, model=ErrorAnswer)


@router.delete(LEGACY, response_model=Generation | Deleted, responses=_CANCEL_ERRORS)
@router.delete(UNIFIED, response_model=Generation | Deleted, responses=_CANCEL_ERRORS)
def cancel(
    generation_id: GenerationId,
    caller: CallerDep,
    services: ServicesDep,
    request: Request,
    purge: Annotated[bool, Query()] = False,
) -> dict[str, Any]:
    """Cancel a generation (reelforge's extension): a queued one ends at once in ``error``
    (``Cancelled``); a running one stops at its next step; an ended one is unchanged. With
    ``purge=true`` it is then deleted with its video and inputs (``{"id", "deleted": true}``;
    afterwards its id is unknown)."""
    if purge:
        deleted = services.delete_job(generation_id, owner=caller.id)
        if deleted is None:
            raise NotFound(f"no generation {generation_id!r}")
        return {"id": deleted.id, "deleted": True}
    job = services.store.cancel(generation_id, owner=caller.id)
    if job is None:
        raise NotFound(f"no generation {generation_id!r}")
    return view(job, services, base_url=str(request.base_url))


@router.get("/v2/models", responses=error_responses(Unauthorized, model=ErrorAnswer))
async def list_models(_: CallerDep, services: ServicesDep) -> dict[str, Any]:
    """The served models and what each can be asked, and the rules every request keeps
    (reelforge's extension; the playground checks its form by them)."""
    return {
        "models": [_listed(model_id, spec) for model_id, spec in sorted(services.models.items())],
        "rules": RULES,
    }


def _lengths(resolution: Resolution) -> list[int]:
    """The durations ``check_length`` lets ``resolution`` have, in seconds."""
    allowed = []
    for duration in DURATIONS:
        try:
            check_length(duration, resolution)
        except InvalidRequest:
            continue
        allowed.append(duration)
    return allowed


RULES: Final[dict[str, Any]] = {
    "max_prompt_chars": MAX_PROMPT_CHARS,
    "durations_by_resolution": {size.value: _lengths(size) for size in Resolution},
    "camera_commands": [movement.value for movement in Movement],
    "image": {
        "formats": ["JPEG", "PNG"],
        "max_bytes": MAX_IMAGE_BYTES,
        "min_short_side": MIN_IMAGE_SHORT_SIDE,
        "min_ratio": MIN_IMAGE_RATIO,
        "max_ratio": MAX_IMAGE_RATIO,
    },
}
"""The contract's rules as data: the lengths each resolution allows (``check_length``), the
camera commands a prompt may hold, and what an image must be (``media.intake``: shorter side
greater than ``min_short_side`` px, width/height strictly between the ratios)."""


def _listed(model_id: str, spec: ModelSpec) -> dict[str, Any]:
    """A model's entry: its capabilities, and the contract's durations it can make."""
    can = capabilities(spec)
    return {
        "id": model_id,
        "engine": spec.engine,
        **asdict(can),
        "durations": [d for d in DURATIONS if can.min_seconds <= d <= can.max_seconds],
        "resolutions": [resolution.value for resolution in Resolution],
    }


# --- answers -----------------------------------------------------------------------------


def view(job: Job, services: Services, *, base_url: str) -> dict[str, Any]:
    """The wire form of ``job`` (a ``Generation``): video only when completed, error only
    when in error, a queue position only when queued, an ETA only when unfinished (and
    estimated: ``api.forecast``). Plain data, serialised as it is on every poll."""
    answer = _generation(job, services.storage, base_url)
    forecast = services.forecasts.of(job)
    answer["queue_position"] = forecast.queue_position
    answer["eta_seconds"] = forecast.eta_seconds(time.time())
    return answer


def webhook_payload(
    job: Job, kind: EventKind, storage: Storage, base_url: str
) -> WebhookPayload | None:
    """The poll's answer (without the forecast), on each status change."""
    return WebhookPayload(event=job.status.value, body=_generation(job, storage, base_url))


def _generation(job: Job, storage: Storage, base_url: str) -> dict[str, Any]:
    """The poll's answer about ``job`` as it is now, plain data."""
    video = None
    if job.status is Status.COMPLETED and job.video_key and job.purged_at is None:
        video = {"url": storage.video_url(job.video_key, base_url=base_url)}
    error = None
    if job.status is Status.ERROR:
        error = {"name": job.error_name or "Error", "message": job.error_message or ""}
    meta = None
    if job.status.is_terminal:
        meta = {"usage": {"credits_used": job.credits_used or 0.0}, **job.meta}
        if job.purged_at is not None:
            meta["purged_at"] = job.purged_at  # retention deleted the video
    return {
        "id": job.id,
        "status": job.status.value,
        "video": video,
        "error": error,
        "meta": meta,
        "progress": job.progress,
        "model": job.model,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "queue_position": None,  # the poll fills both in (``view``); a webhook leaves them
        "eta_seconds": None,
    }


def render_error(status: int, name: str, message: str, param: str | None = None) -> Response:
    """The Hailuo envelope: ``{"error": {"name", "message"}}`` (the field at fault is named at
    the start of the message; ``param`` is not sent)."""
    return JSONResponse({"error": {"name": name, "message": message}}, status_code=status)


DIALECT: Final = Dialect(
    name=NAME,
    prefixes=("/v2/",),
    router=router,
    render_error=render_error,
    hot_routes=HOT_ROUTES,
    webhook_payload=webhook_payload,
)
