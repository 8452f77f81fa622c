"""The webhook outbox's records and the interface its callers use (SQL: ``sqlite_outbox.py``,
``postgres_outbox.py``).

Who moves a delivery between states (only these store methods do):

- ``pending``: entered by ``add_deliveries`` (the deriver, which reads the event log after
  its cursor and moves the cursor in the same transaction, so an event yields its deliveries
  exactly once). Taken by ``claim_deliveries`` with a lease (token + expiry): only the head
  of its line (the oldest pending delivery of its job to its URL), so a generation's events
  reach an endpoint in order. A sender killed mid-send loses nothing: the lease lapses and
  another sender claims the delivery again, with the same ``id`` (its ``webhook-id``).
- ``delivered``: entered by ``record_attempt`` with a 2xx answer. Terminal.
- ``failed``: entered by ``record_attempt`` when the next try would fall past the give-up
  time (24 h after the delivery was made). Terminal.

Every ``record_attempt`` appends a row to the delivery's attempts (time, status code,
error); retention drops a job's deliveries and attempts with its events (``mark_purged``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

CURSOR: Final = "webhooks"
"""Name of the deriver's cursor row in ``webhook_cursor``."""
PER_URL: Final = 4
"""Most deliveries to one URL one claim returns (a slow receiver takes few senders)."""


@dataclass(frozen=True)
class NewDelivery:
    """A delivery the deriver made from one event, before it is stored."""

    id: str
    """Its ``webhook-id`` (``msg_…``), the same on every attempt."""
    event_id: int
    job_id: str
    owner: str
    url: str
    event: str
    """What happened, in the dialect's words (``video.completed``, ``Success``, ...)."""
    body: dict[str, Any]


@dataclass(frozen=True)
class Delivery:
    """A claimed delivery: what to send, and the lease proving the sender holds it."""

    id: str
    event_id: int
    job_id: str
    owner: str
    url: str
    event: str
    body: dict[str, Any]
    attempts: int
    """Attempts recorded before this one."""
    created_at: float
    token: str


@dataclass(frozen=True)
class Attempt:
    """One attempt of one delivery, as ``GET /v2/webhooks/deliveries`` shows it."""

    webhook_id: str
    job_id: str
    event: str
    url: str
    attempt: int
    """1 for the first try of the delivery."""
    at: float
    """Epoch seconds."""
    status_code: int | None
    """The receiver's HTTP status; None when no answer came (refused, timeout)."""
    error: str | None


@dataclass(frozen=True)
class KeyWebhook:
    """A key's webhook settings: its default endpoint (if any) and its signing secret."""

    key_id: str
    url: str | None
    secret: str
    """``whsec_<base64>``; made on first need."""


class Outbox(Protocol):
    """Webhook deliveries, from the event log to their receivers."""

    def webhook_cursor(self) -> int:
        """The id of the last event the deriver has turned into deliveries."""
        ...

    def add_deliveries(self, *, seen: int, upto: int, deliveries: Sequence[NewDelivery]) -> bool:
        """Store ``deliveries`` (one per event and URL; a pair stored already is left as it
        is) and move the cursor from ``seen`` to ``upto``, one transaction. False, storing
        nothing, if the cursor was no longer ``seen`` (another deriver went first)."""
        ...

    def claim_deliveries(
        self, *, limit: int, lease_seconds: float, busy: Collection[str] = ()
    ) -> list[Delivery]:
        """Lease up to ``limit`` due pending deliveries, each the head of its (job, URL)
        line and none to a URL in ``busy``, oldest due first. Concurrent claimers never get
        one delivery twice while its lease holds."""
        ...

    def record_attempt(
        self,
        delivery: Delivery,
        *,
        status_code: int | None,
        error: str | None,
        retry_at: float | None,
    ) -> bool:
        """Record an attempt (now): ``delivered`` on a 2xx ``status_code``; else pending
        again from ``retry_at``, or ``failed`` when ``retry_at`` is None. The lease is
        cleared. False, recording nothing, if the lease was lost."""
        ...

    def attempts(self, *, owner: str | None, job_id: str | None, limit: int) -> list[Attempt]:
        """Recorded attempts, newest first, at most ``limit``: ``owner``'s (None: anyone's),
        of one job with ``job_id``."""
        ...

    def key_webhook(self, key_id_or_prefix: str, *, new_secret: str) -> KeyWebhook | None:
        """The active key's webhook settings (by id or display prefix), storing
        ``new_secret`` first if it had none. None if no active key matches; ``ValueError``
        if a prefix matches several."""
        ...

    def set_key_webhook(
        self, key_id_or_prefix: str, *, url: str | None, secret: str | None = None
    ) -> bool:
        """Set the active key's default endpoint (None: none), and its secret if ``secret``
        is given. False if no active key matches; ``ValueError`` if several do."""
        ...


def attempt_row(
    delivery: Delivery, *, status_code: int | None, error: str | None, retry_at: float | None
) -> dict[str, Any]:
    """An attempt's values for both stores' ``record_attempt`` (but the time): the delivery's
    next state is ``delivered`` on a 2xx answer, else ``pending`` until ``retry_at``, or
    ``failed`` when no retry is left (``retry_at`` None)."""
    ok = status_code is not None and 200 <= status_code < 300
    return {
        "id": delivery.id,
        "token": delivery.token,
        "state": "delivered" if ok else ("pending" if retry_at is not None else "failed"),
        "retry_at": retry_at,
        "status_code": status_code,
        "error": error,
    }
