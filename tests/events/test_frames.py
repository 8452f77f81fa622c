"""The stream's frames straight from ``Streams`` on a real SQLite store, where a test can
slip a change in between the stream's reads."""

from __future__ import annotations

import builtins
import json
from pathlib import Path
from typing import Any

import anyio

from reelforge.events.hub import Hub
from reelforge.events.stream import Streams
from reelforge.jobs.model import JobEvent, Lease, Phase
from reelforge.jobs.sqlite import SQLiteJobStore
from tests.jobs.contract import create


class EndingMidRead(SQLiteJobStore):
    """Completes ``lease``'s job just after the first read of that job's events that has
    any, as a worker finishing at that moment would."""

    lease: Lease | None = None

    def events_after(
        self, after: int, *, limit: int = 100, job_id: str | None = None
    ) -> builtins.list[JobEvent]:
        events = super().events_after(after, limit=limit, job_id=job_id)
        if self.lease is not None and job_id is not None and events:
            self.complete(self.lease, video_key="v.mp4", credits_used=1, meta={})
            self.lease = None
        return events


def frames(store: SQLiteJobStore, job_id: str) -> list[dict[str, Any]]:
    """Every event the stream sends for ``job_id`` until it ends (as plain data)."""
    hub = Hub(store, poll_seconds=0.05, max_streams=1)
    streams = Streams(store, hub, heartbeat_seconds=0.2)
    job = store.get(job_id)
    assert job is not None

    def render(job: Any) -> dict[str, Any]:
        return {"status": job.status.value, "progress": job.progress}

    async def collect() -> list[dict[str, Any]]:
        found = []
        with anyio.fail_after(10):
            async for chunk in streams.frames(job.id, job.owner, 0, render):
                if chunk.startswith(b"id:"):
                    found.append(json.loads(chunk.split(b"data: ", 1)[1]))
        return found

    return anyio.run(collect)


def test_an_end_committed_between_the_streams_reads_is_still_sent(tmp_path: Path) -> None:
    store = EndingMidRead(tmp_path / "db.sqlite3")
    job = create(store)
    lease = store.claim(worker_id="w1", lease_seconds=30)
    assert lease is not None
    assert store.heartbeat(lease, lease_seconds=30, progress=50, phase=Phase.ENCODING)
    store.lease = lease
    assert frames(store, job.id) == [
        {"status": "queued", "progress": 0},
        {"status": "generating", "progress": 0},
        {"status": "generating", "progress": 50},
        {"status": "completed", "progress": 100},
    ]
    store.close()
