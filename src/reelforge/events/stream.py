"""A live stream of one generation as server-sent events (``text/event-stream``).

Each change of the job's status or progress in the event log is one event::

    id: 41
    event: generation
    data: {the dialect's poll answer for the job as it was after that change}

The stream starts after the event ``Last-Event-ID`` names (from the job's first event
without it) and ends after the job's terminal event (or at once if it has ended and nothing
is left to send, or when the job is deleted). A comment line (``: heartbeat``) is sent after
each ``heartbeat_seconds`` of silence, so that proxies and clients can tell a quiet stream
from a dead one. A client that hangs up stops the stream at once (its task is cancelled),
whatever it was waiting for.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import AsyncGenerator, Callable
from typing import Any, Final

import anyio
from anyio import to_thread
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from reelforge.errors import InvalidRequest
from reelforge.events.hub import Hub
from reelforge.jobs.model import EventKind, Job, JobEvent, JobQueue

MEDIA_TYPE: Final = "text/event-stream"
EVENT: Final = "generation"
SHUTDOWN_GRACE_S: Final = 3
"""On a stop, how long ``reelforge serve`` lets open streams (and any other request) run
before it ends them, seconds: a stream may last as long as its generation."""
PAGE: Final = 100
"""Events read per look at one job."""
HEARTBEAT: Final = b": heartbeat\n\n"
STREAM_ANSWER: Final[dict[int | str, dict[str, Any]]] = {
    200: {"content": {MEDIA_TYPE: {"schema": {"type": "string"}}}, "description": "Events."}
}
"""The stream routes' success, for the OpenAPI document."""

Render = Callable[[Job], dict[str, Any]]
"""A dialect's poll answer for a job."""


def resume_from(last_event_id: str | None) -> int:
    """The event id a stream starts after: the ``Last-Event-ID`` header's, 0 without it.
    ``InvalidRequest`` for anything but a non-negative integer."""
    if last_event_id is None or last_event_id == "":
        return 0
    value = last_event_id.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 18:
        raise InvalidRequest("Last-Event-ID", f"must be an event id (got {last_event_id!r})")
    return int(value)


def as_of(job: Job, event: JobEvent) -> Job:
    """``job`` as it was right after ``event``: its status, progress and phase then; only
    an ended job keeps its end (video, error, finish time)."""
    if event.status.is_terminal:
        return job
    return dataclasses.replace(
        job, status=event.status, progress=event.progress, phase=event.phase, finished_at=None
    )


def frame(event_id: int, data: dict[str, Any]) -> bytes:
    """One server-sent event."""
    body = json.dumps(data, separators=(",", ":"))
    return f"id: {event_id}\nevent: {EVENT}\ndata: {body}\n\n".encode()


@dataclasses.dataclass(frozen=True)
class Streams:
    """What a process's stream routes share: its store, its hub and the heartbeat."""

    store: JobQueue
    hub: Hub
    heartbeat_seconds: float

    def open(self, job: Job, *, last_event_id: str | None, render: Render) -> EventStream:
        """The response streaming ``job`` (already found for its owner) after
        ``last_event_id``; ``InvalidRequest`` for a bad id, ``Unavailable`` at the limit."""
        after = resume_from(last_event_id)
        self.hub.reserve()
        return EventStream(self.frames(job.id, job.owner, after, render), self.hub.release)

    async def frames(
        self, job_id: str, owner: str, after: int, render: Render
    ) -> AsyncGenerator[bytes]:
        """The stream's bytes: events as they are appended, heartbeats in silences."""
        async with self.hub.subscribe(job_id) as woken:
            shown: tuple[object, ...] | None = None
            while True:
                woken.clear()
                # The job before the events, then (if any) after them: an end seen before is
                # in the events; a job read after them is at least as new as each of them.
                before = await to_thread.run_sync(self._job, job_id, owner)
                events = await to_thread.run_sync(self._read, job_id, after)
                job = await to_thread.run_sync(self._job, job_id, owner) if events else before
                if before is None or job is None:
                    return  # deleted
                for event in events:
                    after = event.id
                    if event.kind is EventKind.DELETED:
                        return
                    if (event.status, event.progress) != shown:
                        shown = (event.status, event.progress)
                        yield frame(event.id, render(as_of(job, event)))
                    if event.status.is_terminal:
                        return
                if len(events) == PAGE:
                    continue
                if before.status.is_terminal:
                    return  # resumed after its end: nothing more will come
                with anyio.move_on_after(self.heartbeat_seconds) as silence:
                    await woken.wait()
                if silence.cancelled_caught:
                    yield HEARTBEAT

    def _read(self, job_id: str, after: int) -> list[JobEvent]:
        return self.store.events_after(after, limit=PAGE, job_id=job_id)

    def _job(self, job_id: str, owner: str) -> Job | None:
        return self.store.get(job_id, owner=owner)


class EventStream(Response):
    """The ASGI response carrying ``frames``; ``done`` is called once it ends, however.

    It reads the request's ``receive`` meanwhile: a client that disconnects cancels the
    stream at once, rather than at the next heartbeat's failed write.
    """

    media_type = MEDIA_TYPE

    def __init__(self, frames: AsyncGenerator[bytes], done: Callable[[], None]) -> None:
        self.frames = frames
        self.done = done
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(_cancel_on_disconnect, receive, group.cancel_scope)
                await send(
                    {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
                )
                async with contextlib.aclosing(self.frames) as frames:
                    async for chunk in frames:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                group.cancel_scope.cancel()
        except OSError:
            pass  # the client went away mid-write
        finally:
            self.done()


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()
