"""Webhooks: which events become deliveries, to where, in which shape, and how they are signed.

The deriver (``derive``) reads the event log after the outbox's cursor and turns each status
change (not progress, not deletion) of a job with an endpoint into one delivery: the job's
``callback_url``, else its key's default endpoint. The body is shaped once, there, by the
dialect that created the job (``Dialect.webhook_payload``), from the job as it stood right
after the event; every attempt sends the same body under the same ``webhook-id``, signed
afresh with the Standard Webhooks scheme (``sign``).
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Final
from urllib.parse import urlsplit

from standardwebhooks import Webhook

from reelforge.api.dialects import DIALECTS
from reelforge.api.dialects.base import WebhookShaper
from reelforge.contract import Status
from reelforge.jobs.model import EventKind, Job, JobEvent, Store
from reelforge.jobs.outbox import NewDelivery
from reelforge.settings import Settings
from reelforge.storage.base import Storage

STATUS_CHANGES: Final = frozenset(
    {
        EventKind.QUEUED,
        EventKind.STARTED,
        EventKind.REQUEUED,
        EventKind.COMPLETED,
        EventKind.ERROR,
        EventKind.CANCELLED,
    }
)
"""The event kinds webhooks tell of (``progress`` and ``deleted`` are not sent)."""
DERIVE_BATCH: Final = 200
"""Most events one ``derive`` call reads."""
SHAPERS: Final[Mapping[str, WebhookShaper]] = {
    dialect.name: dialect.webhook_payload
    for dialect in DIALECTS
    if dialect.webhook_payload is not None
}


def new_secret() -> str:
    """A fresh signing secret, ``whsec_`` and the base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def sign(secret: str, webhook_id: str, body: str, at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt sending ``body`` at time ``at``."""
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(webhook_id, at, body),
    }


def encode(body: Mapping[str, object]) -> str:
    """The exact text that is sent and signed."""
    return json.dumps(body, separators=(",", ":"))


def public_base_url(settings: Settings) -> str:
    """The API's address as links in payloads name it (``REELFORGE_BASE_URL``'s origin, else
    the address ``serve`` listens on)."""
    if settings.base_url:
        parts = urlsplit(settings.base_url)
        return f"{parts.scheme}://{parts.netloc}/"
    return f"http://{settings.host}:{settings.port}/"


class Deriver:
    """Turns new events of the log into deliveries (any number may run: the cursor moves
    by compare-and-set, so each event yields its deliveries once)."""

    def __init__(self, store: Store, storage: Storage, *, base_url: str) -> None:
        self._store = store
        self._storage = storage
        self._base_url = base_url

    def derive(self) -> int:
        """Read up to ``DERIVE_BATCH`` events after the cursor; store their deliveries and
        move the cursor past them. How many events were read (0: the log is caught up, or
        another deriver went first)."""
        seen = self._store.webhook_cursor()
        events = self._store.events_after(seen, limit=DERIVE_BATCH)
        if not events:
            return 0
        jobs: dict[str, Job | None] = {}
        urls: dict[str, str | None] = {}
        deliveries = []
        for event in events:
            if event.kind not in STATUS_CHANGES:
                continue
            if event.job_id not in jobs:
                jobs[event.job_id] = self._store.get(event.job_id)
            job = jobs[event.job_id]
            url = None if job is None else job.callback_url or self._key_url(job.owner, urls)
            if job is not None and url is not None:
                delivery = self._delivery(_as_at(job, event), event, url)
                deliveries += [] if delivery is None else [delivery]
        moved = self._store.add_deliveries(seen=seen, upto=events[-1].id, deliveries=deliveries)
        return len(events) if moved else 0

    def _key_url(self, owner: str, urls: dict[str, str | None]) -> str | None:
        if owner not in urls:
            found = self._store.key_webhook(owner, new_secret=new_secret())
            urls[owner] = None if found is None else found.url
        return urls[owner]

    def _delivery(self, job: Job, event: JobEvent, url: str) -> NewDelivery | None:
        shaper = SHAPERS.get(job.dialect)
        payload = None if shaper is None else shaper(job, event.kind, self._storage, self._base_url)
        if payload is None:
            return None
        return NewDelivery(
            id=f"msg_{uuid.uuid4().hex}",
            event_id=event.id,
            job_id=job.id,
            owner=job.owner,
            url=url,
            event=payload.event,
            body=payload.body,
        )


def _as_at(job: Job, event: JobEvent) -> Job:
    """``job`` as it stood right after ``event`` (the log keeps the status, progress, phase
    and an error's name and message; the rest is today's)."""
    error_name = event.data.get("error_name", job.error_name)
    error_message = event.data.get("error_message", job.error_message)
    return replace(
        job,
        status=event.status,
        progress=event.progress,
        phase=event.phase,
        updated_at=event.created_at,
        finished_at=job.finished_at if event.status.is_terminal else None,
        error_name=error_name if event.status is Status.ERROR else None,
        error_message=error_message if event.status is Status.ERROR else None,
    )


def now_utc() -> datetime:
    return datetime.now(UTC)
