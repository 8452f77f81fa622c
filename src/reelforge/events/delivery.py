"""The delivery loop: claims due deliveries from the outbox and sends them, each on a thread
of a bounded pool, recording every attempt.

One runs in every worker process (``runtime.run_worker``). Deliveries are leased like jobs:
a process killed mid-send loses nothing, as the lease lapses and another sender takes the
delivery again (same ``webhook-id``). A slow or dead receiver holds at most ``PER_URL``
senders of a process (``claim_deliveries``'s ``busy``), so others are not held up; its own
deliveries wait in line per generation, in order.

Retries: a non-2xx answer, a timeout or a refused connection is tried again after
``webhook_backoff_seconds`` doubled per attempt (at most ``MAX_DELAY_SECONDS``), jittered by
±20%; a delivery whose next try would fall past ``GIVE_UP_SECONDS`` after it was made ends
``failed``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Final
from urllib.parse import urlsplit

from reelforge.errors import ImageFetchFailed
from reelforge.events.webhooks import (
    DERIVE_BATCH,
    Deriver,
    encode,
    new_secret,
    now_utc,
    public_base_url,
    sign,
)
from reelforge.jobs.model import Store
from reelforge.jobs.outbox import PER_URL, Delivery
from reelforge.media.fetch import FetchPolicy, post_json
from reelforge.metrics import process_metrics
from reelforge.settings import Settings
from reelforge.storage.base import Storage

log = logging.getLogger(__name__)

GIVE_UP_SECONDS: Final = 24 * 3600.0
MAX_DELAY_SECONDS: Final = 3600.0
JITTER: Final = 0.2
CONCURRENCY: Final = 16
"""Deliveries one process sends at once."""
POLL_SECONDS: Final = 0.25
"""Pause of an idle loop between looks at the log and the outbox."""
SECRET_CACHE_SECONDS: Final = 30.0
ANSWER_BYTES: Final = 64 * 1024
"""The most of a receiver's answer that is read."""


def retry_delay(
    attempts: int, first: float, *, jitter: Callable[[], float] = random.random
) -> float:
    """Seconds before the next try after ``attempts`` failed ones (1 or more): ``first``
    doubled per earlier failure, at most ``MAX_DELAY_SECONDS``, times 0.8..1.2."""
    base = min(first * 2.0 ** (attempts - 1), MAX_DELAY_SECONDS)
    return base * (1 - JITTER + 2 * JITTER * jitter())


class Deliverer:
    """Derives deliveries from the event log and sends them until ``stop`` is set."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        storage: Storage,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._deriver = Deriver(store, storage, base_url=public_base_url(settings))
        self._policy = FetchPolicy(
            max_bytes=ANSWER_BYTES,
            deadline_seconds=settings.webhook_timeout_seconds,
            max_redirects=0,
            allow_private=settings.webhook_allow_private,
        )
        self._lease_seconds = 2 * settings.webhook_timeout_seconds + 1
        self._in_flight: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._secrets: dict[str, tuple[float, str]] = {}

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set; sends still in flight then end with the pool."""
        with ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="reelforge-webhook") as pool:
            while not stop.is_set():
                try:
                    busy = self.step(pool)
                except Exception:  # the database is away: the next pass tries again
                    log.exception("webhook delivery pass failed")
                    busy = False
                if not busy:
                    self._wake.wait(POLL_SECONDS)
                    self._wake.clear()

    def step(self, pool: ThreadPoolExecutor) -> bool:
        """One pass: derive new deliveries, then claim what the pool has room for and send
        it. True if there may be more to do at once (a full batch of events or of claims);
        otherwise the loop waits ``POLL_SECONDS`` or for a send to end, so that the outbox's
        writes stay few while the API is busy (they share the database's write turns)."""
        derived = self._deriver.derive()
        with self._lock:
            room = CONCURRENCY - sum(self._in_flight.values())
            busy = {url for url, count in self._in_flight.items() if count >= PER_URL}
        claimed = []
        if room > 0:
            claimed = self._store.claim_deliveries(
                limit=room, lease_seconds=self._lease_seconds, busy=busy
            )
        for delivery in claimed:
            with self._lock:
                self._in_flight[delivery.url] += 1
            pool.submit(self.send, delivery).add_done_callback(self._sent(delivery.url))
        return derived >= DERIVE_BATCH or (room > 0 and len(claimed) == room)

    def _sent(self, url: str) -> Callable[[Future[None]], None]:
        def done(_: Future[None]) -> None:
            with self._lock:
                self._in_flight[url] -= 1
                if self._in_flight[url] <= 0:
                    del self._in_flight[url]
            self._wake.set()

        return done

    def send(self, delivery: Delivery) -> None:
        """One attempt of ``delivery``, recorded (a lost lease records nothing)."""
        status_code, error = None, None
        try:
            body = encode(delivery.body)
            headers = sign(self._secret(delivery.owner), delivery.id, body, now_utc())
            status_code, _ = post_json(
                delivery.url, body.encode(), headers, field="url", policy=self._policy
            )
        except ImageFetchFailed as exc:
            error = str(exc)
        except Exception as exc:  # anything else about this one send: recorded, retried
            # the host only: a receiver's URL may carry a token in its path or query
            log.exception("webhook %s to %s failed", delivery.id, urlsplit(delivery.url).hostname)
            error = f"{type(exc).__name__}: {exc}"
        ok = status_code is not None and 200 <= status_code < 300
        if status_code is not None and not ok:
            error = f"HTTP {status_code}"
        retry_at = None if ok else self.retry_at(delivery)
        outcome = "delivered" if ok else "failed" if retry_at is not None else "gave_up"
        process_metrics().webhook_deliveries.labels(outcome=outcome).inc()
        self._store.record_attempt(
            delivery, status_code=status_code, error=error, retry_at=retry_at
        )

    def retry_at(self, delivery: Delivery) -> float | None:
        """When to try ``delivery`` again after its attempt failed now; None to give up."""
        delay = retry_delay(delivery.attempts + 1, self._settings.webhook_backoff_seconds)
        at = self._clock() + delay
        return None if at > delivery.created_at + GIVE_UP_SECONDS else at

    def _secret(self, owner: str) -> str:
        """The key's signing secret (made on first need), kept ``SECRET_CACHE_SECONDS``."""
        now = time.monotonic()
        cached = self._secrets.get(owner)
        if cached is not None and now - cached[0] < SECRET_CACHE_SECONDS:
            return cached[1]
        found = self._store.key_webhook(owner, new_secret=new_secret())
        if found is None:
            raise LookupError(f"key {owner} is gone")
        self._secrets[owner] = (now, found.secret)
        return found.secret
