"""What route handlers receive: the process's services and the calling key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Final

from fastapi import Depends, Header, Request, Security
from fastapi.security import HTTPAuthorizationCredentials

from reelforge.api.accept import Submission, accept
from reelforge.api.admission import Gate
from reelforge.api.auth import KeyCache, authenticate
from reelforge.api.forecast import Forecasts
from reelforge.api.openapi import BEARER
from reelforge.engines.registry import ModelSpec
from reelforge.events.challenge import Challenges
from reelforge.events.hub import Hub
from reelforge.events.stream import Streams
from reelforge.jobs.model import REPORT_SECONDS, ApiKey, Job, Store
from reelforge.logs import RequestLines, request_lines
from reelforge.metrics import Metrics, process_metrics
from reelforge.retention import discard_files
from reelforge.settings import Settings
from reelforge.storage.base import Storage

KEY_ID: Final = "reelforge.key_id"
"""The ASGI scope entry where authentication leaves the caller's key id, for the log line."""


@dataclass(frozen=True)
class Services:
    """The parts request handlers use; built once by the process that serves the app."""

    settings: Settings
    store: Store
    storage: Storage
    models: dict[str, ModelSpec]
    """Served model id → its registry entry."""
    metrics: Metrics = field(default_factory=process_metrics)
    """What the process counts (``reelforge.metrics``)."""
    request_lines: RequestLines = field(default_factory=request_lines)
    """Where the process logs its requests (``logs.RequestLines``)."""
    keys: KeyCache = field(init=False)
    """Keys found lately (a revoked key keeps working here for up to 2 s)."""
    challenges: Challenges = field(init=False)
    """MiniMax's callback checks, bounded per key."""
    forecasts: Forecasts = field(init=False)
    """Queue positions and ETAs, from each model's outlook read at most once a second."""
    streams: Streams = field(init=False)
    """The process's live streams (``events/stream.py``); nothing runs until one opens."""

    def __post_init__(self) -> None:
        settings = self.settings
        object.__setattr__(self, "keys", KeyCache(self.store))
        challenges = Challenges(allow_private=settings.webhook_allow_private)
        object.__setattr__(self, "challenges", challenges)
        ready_within = 3 * REPORT_SECONDS + settings.poll_seconds
        object.__setattr__(self, "forecasts", Forecasts(self.store, ready_within=ready_within))
        hub = Hub(
            self.store, poll_seconds=settings.stream_poll_seconds, max_streams=settings.max_streams
        )
        streams = Streams(self.store, hub, heartbeat_seconds=settings.stream_heartbeat_seconds)
        object.__setattr__(self, "streams", streams)

    def caller(self, authorization: str | None) -> ApiKey:
        """The key behind an ``Authorization`` header: the one check every route makes."""
        return authenticate(self.keys, authorization)

    def admit(self, submission: Submission, caller: ApiKey, idempotency_key: str | None) -> Job:
        """``caller``'s create, held to its limits and its ``Idempotency-Key`` (``accept``).
        Blocking: call it from the thread pool."""
        settings = self.settings
        gate = Gate.of(caller, settings.key_limits, settings.max_queued, idempotency_key)
        return accept(
            submission,
            gate=gate,
            models=self.models,
            max_attempts=settings.max_attempts,
            queue=self.store,
            storage=self.storage,
        )

    def delete_job(self, job_id: str, *, owner: str) -> Job | None:
        """An owner's delete, whichever dialect asks: cancel the job, hide it
        (``JobQueue.delete``), then remove its video and the inputs no other job uses, as
        retention would (a video a running job stores later goes with retention's next sweep).
        None if ``owner`` has no such job. Blocking: call it from the thread pool."""
        job = self.store.delete(job_id, owner=owner)
        if job is not None:
            discard_files(self.store, self.storage, [job])
        return job


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


# Async on purpose: both are cheap and run on the event loop, not in the thread pool (a hop
# there and back costs more than the work). The store's reads never wait for a writer.
async def get_services(request: Request) -> Services:
    return services_of(request)


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_caller(
    services: ServicesDep,
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
) -> ApiKey:
    # ``BEARER`` declares the scheme in the OpenAPI document; ``api.auth`` reads the header.
    caller = services.caller(request.headers.get("authorization"))
    request.scope[KEY_ID] = caller.id  # for the request's log line (``api.observe``)
    return caller


CallerDep = Annotated[ApiKey, Depends(get_caller)]

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Send a create again with the same key (up to 255 characters, 24 h) to get"
        " the first answer instead of a second job.",
    ),
]
"""A create route's ``Idempotency-Key`` header (default None)."""
