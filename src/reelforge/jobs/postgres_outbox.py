"""The webhook outbox on PostgreSQL (``outbox.Outbox``): mixed into ``PostgresJobStore``,
whose pool and clock it uses. Claims lock their rows with ``FOR UPDATE SKIP LOCKED``, so
concurrent claimers take different deliveries and never wait for each other."""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

import psycopg
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from reelforge.jobs.outbox import (
    CURSOR,
    PER_URL,
    Attempt,
    Delivery,
    KeyWebhook,
    NewDelivery,
    attempt_row,
)

PgConnection = psycopg.Connection[DictRow]


class PostgresOutbox(ABC):
    @abstractmethod
    def _now(self) -> float | None:
        """The store's time: the injected clock's, or None for the database's."""

    @abstractmethod
    def _connection(self) -> AbstractContextManager[PgConnection]:
        """A pooled autocommit connection."""

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[PgConnection]:
        """A pooled connection in one transaction."""

    def webhook_cursor(self) -> int:
        with self._connection() as conn:
            row = conn.execute(
                "SELECT event_id FROM webhook_cursor WHERE name = %s", (CURSOR,)
            ).fetchone()
        return 0 if row is None else int(row["event_id"])

    def add_deliveries(self, *, seen: int, upto: int, deliveries: Sequence[NewDelivery]) -> bool:
        with self._transaction() as conn:
            moved = conn.execute(
                "UPDATE webhook_cursor SET event_id = %s WHERE name = %s AND event_id = %s",
                (upto, CURSOR, seen),
            ).rowcount
            if moved != 1:
                return False
            with conn.cursor() as cursor:
                cursor.executemany(
                    """
                    INSERT INTO webhook_deliveries (id, event_id, job_id, owner, url, event,
                                                    body, next_at, created_at)
                    VALUES (%(id)s, %(event_id)s, %(job_id)s, %(owner)s, %(url)s, %(event)s,
                            %(body)s, reelforge_now(%(now)s), reelforge_now(%(now)s))
                    ON CONFLICT (event_id, url) DO NOTHING
                    """,
                    list(_new_rows(deliveries, self._now())),
                )
        return True

    def claim_deliveries(
        self, *, limit: int, lease_seconds: float, busy: Collection[str] = ()
    ) -> list[Delivery]:
        params = {
            "now": self._now(),
            "seconds": lease_seconds,
            "token": secrets.token_hex(16),
            "busy": sorted(busy),
            "limit": limit,
            "per_url": PER_URL,
        }
        with self._transaction() as conn:
            rows = conn.execute(
                """
                WITH heads AS (
                    SELECT d.id,
                           ROW_NUMBER() OVER (PARTITION BY d.url ORDER BY d.next_at, d.id) AS n
                    FROM webhook_deliveries AS d
                    WHERE d.state = 'pending' AND d.next_at <= reelforge_now(%(now)s)
                      AND (d.lease_expires_at IS NULL
                           OR d.lease_expires_at < reelforge_now(%(now)s))
                      AND NOT (d.url = ANY(%(busy)s))
                      AND NOT EXISTS (
                          SELECT 1 FROM webhook_deliveries AS e
                          WHERE e.job_id = d.job_id AND e.url = d.url
                            AND e.state = 'pending' AND e.event_id < d.event_id)
                ), picked AS (
                    SELECT w.id FROM webhook_deliveries AS w JOIN heads ON heads.id = w.id
                    WHERE heads.n <= %(per_url)s AND w.state = 'pending'
                      AND (w.lease_expires_at IS NULL
                           OR w.lease_expires_at < reelforge_now(%(now)s))
                    ORDER BY w.next_at LIMIT %(limit)s
                    FOR UPDATE OF w SKIP LOCKED
                )
                UPDATE webhook_deliveries SET lease_token = %(token)s,
                    lease_expires_at = reelforge_now(%(now)s) + %(seconds)s
                FROM picked WHERE webhook_deliveries.id = picked.id
                RETURNING webhook_deliveries.*
                """,
                params,
            ).fetchall()
        return [_delivery(row) for row in rows]

    def record_attempt(
        self,
        delivery: Delivery,
        *,
        status_code: int | None,
        error: str | None,
        retry_at: float | None,
    ) -> bool:
        attempt = attempt_row(delivery, status_code=status_code, error=error, retry_at=retry_at)
        params = {**attempt, "now": self._now()}
        with self._transaction() as conn:
            row = conn.execute(
                """
                UPDATE webhook_deliveries
                SET attempts = attempts + 1, state = %(state)s, lease_token = NULL,
                    lease_expires_at = NULL,
                    next_at = COALESCE(%(retry_at)s::double precision, next_at)
                WHERE id = %(id)s AND lease_token = %(token)s
                RETURNING attempts
                """,
                params,
            ).fetchone()
            if row is None:
                return False
            conn.execute(
                """
                INSERT INTO webhook_attempts (delivery_id, attempt, at, status_code, error)
                VALUES (%(id)s, %(attempt)s, reelforge_now(%(now)s), %(status_code)s, %(error)s)
                """,
                {**params, "attempt": row["attempts"]},
            )
        return True

    def attempts(self, *, owner: str | None, job_id: str | None, limit: int) -> list[Attempt]:
        with self._connection() as conn:
            rows = conn.execute(
                """
                SELECT d.id AS webhook_id, d.job_id, d.event, d.url, a.attempt, a.at,
                       a.status_code, a.error
                FROM webhook_attempts AS a JOIN webhook_deliveries AS d ON d.id = a.delivery_id
                WHERE (%(owner)s::text IS NULL OR d.owner = %(owner)s)
                  AND (%(job_id)s::text IS NULL OR d.job_id = %(job_id)s)
                ORDER BY a.at DESC, a.attempt DESC LIMIT %(limit)s
                """,
                {"owner": owner, "job_id": job_id, "limit": limit},
            ).fetchall()
        return [Attempt(**row) for row in rows]

    def key_webhook(self, key_id_or_prefix: str, *, new_secret: str) -> KeyWebhook | None:
        with self._transaction() as conn:
            key_id = _key_id(conn, key_id_or_prefix)
            if key_id is None:
                return None
            row = conn.execute(
                """
                UPDATE api_keys SET webhook_secret = COALESCE(webhook_secret, %s) WHERE id = %s
                RETURNING id, webhook_url, webhook_secret
                """,
                (new_secret, key_id),
            ).fetchone()
        assert row is not None  # the row is locked by this transaction
        return KeyWebhook(key_id=row["id"], url=row["webhook_url"], secret=row["webhook_secret"])

    def set_key_webhook(
        self, key_id_or_prefix: str, *, url: str | None, secret: str | None = None
    ) -> bool:
        with self._transaction() as conn:
            key_id = _key_id(conn, key_id_or_prefix)
            if key_id is not None:
                conn.execute(
                    """
                    UPDATE api_keys
                    SET webhook_url = %s, webhook_secret = COALESCE(%s, webhook_secret)
                    WHERE id = %s
                    """,
                    (url, secret, key_id),
                )
        return key_id is not None

    @staticmethod
    def _drop_deliveries(conn: PgConnection, ids: list[str]) -> None:
        """Retention: drop the deliveries (their attempts cascade) of the jobs ``ids``."""
        conn.execute("DELETE FROM webhook_deliveries WHERE job_id = ANY(%s)", (ids,))


def _key_id(conn: PgConnection, needle: str) -> str | None:
    """The id of the key ``needle`` names (see ``sqlite_outbox._key_id``), its row locked."""
    rows = conn.execute(
        """
        SELECT id FROM api_keys
        WHERE id = %(needle)s OR (prefix = %(needle)s AND revoked_at IS NULL)
        FOR UPDATE
        """,
        {"needle": needle},
    ).fetchall()
    if len(rows) > 1:
        raise ValueError(f"{needle!r} matches {len(rows)} active keys; use the key's id")
    return str(rows[0]["id"]) if rows else None


def _new_rows(deliveries: Sequence[NewDelivery], now: float | None) -> Iterator[dict[str, Any]]:
    for delivery in deliveries:
        yield {**delivery.__dict__, "body": Jsonb(delivery.body), "now": now}


def _delivery(row: DictRow) -> Delivery:
    return Delivery(
        id=row["id"],
        event_id=row["event_id"],
        job_id=row["job_id"],
        owner=row["owner"],
        url=row["url"],
        event=row["event"],
        body=row["body"],
        attempts=row["attempts"],
        created_at=row["created_at"],
        token=row["lease_token"],
    )
