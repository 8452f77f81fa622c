"""What route handlers receive: the process's services and the calling key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Header, Request

from reelforge.api.auth import KeyCache, authenticate
from reelforge.engines.registry import ModelSpec
from reelforge.events.hub import Hub
from reelforge.events.stream import Streams
from reelforge.jobs.model import ApiKey, Job, Store
from reelforge.retention import discard_files
from reelforge.settings import Settings
from reelforge.storage.base import Storage


@dataclass(frozen=True)
class Services:
    """The parts request handlers use; built once by the process that serves the app."""

    settings: Settings
    store: Store
    storage: Storage
    models: dict[str, ModelSpec]
    """Served model id → its registry entry."""
    keys: KeyCache = field(init=False)
    """Keys found lately (a revoked key keeps working here for up to 2 s)."""
    streams: Streams = field(init=False)
    """The process's live streams (``events/stream.py``); nothing runs until one opens."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", KeyCache(self.store))
        settings = self.settings
        hub = Hub(
            self.store,
            poll_seconds=settings.stream_poll_seconds,
            max_streams=settings.max_streams,
        )
        streams = Streams(self.store, hub, heartbeat_seconds=settings.stream_heartbeat_seconds)
        object.__setattr__(self, "streams", streams)

    def caller(self, authorization: str | None) -> ApiKey:
        """The key behind an ``Authorization`` header: the one check every route makes."""
        return authenticate(self.keys, authorization)

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
    services: ServicesDep, authorization: Annotated[str | None, Header()] = None
) -> ApiKey:
    return services.caller(authorization)


CallerDep = Annotated[ApiKey, Depends(get_caller)]
