"""The webhook outbox on SQLite (``outbox.Outbox``): mixed into ``SQLiteJobStore``, whose file
and clock it uses. Writers take turns (``SQLiteFile.write``), so a claim is one transaction
that no other claimer interleaves with."""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Callable, Collection, Sequence
from typing import Any, Final

from reelforge.jobs.outbox import (
    CURSOR,
    PER_URL,
    Attempt,
    Delivery,
    KeyWebhook,
    NewDelivery,
    attempt_row,
)
from reelforge.jobs.sqlitefile import SQLiteFile

_HEADS: Final = """
    WITH heads AS (
        SELECT d.id, d.next_at,
               ROW_NUMBER() OVER (PARTITION BY d.url ORDER BY d.next_at, d.id) AS n
        FROM webhook_deliveries AS d
        WHERE d.state = 'pending' AND d.next_at <= :now
          AND (d.lease_expires_at IS NULL OR d.lease_expires_at < :now)
          AND d.url NOT IN (SELECT value FROM json_each(:busy))
          AND NOT EXISTS (
              SELECT 1 FROM webhook_deliveries AS e
              WHERE e.job_id = d.job_id AND e.url = d.url
                AND e.state = 'pending' AND e.event_id < d.event_id)
    )
"""
"""The claimable deliveries: due, not held, to a URL not busy, each the head of its line;
``n`` numbers them per URL."""


class SQLiteOutbox:
    _db: SQLiteFile
    _clock: Callable[[], float]

    def webhook_cursor(self) -> int:
        row = (
            self._db.read()
            .execute("SELECT event_id FROM webhook_cursor WHERE name = ?", (CURSOR,))
            .fetchone()
        )
        return 0 if row is None else int(row[0])

    def add_deliveries(self, *, seen: int, upto: int, deliveries: Sequence[NewDelivery]) -> bool:
        now = self._clock()
        with self._db.write() as conn:
            moved = conn.execute(
                "UPDATE webhook_cursor SET event_id = ? WHERE name = ? AND event_id = ?",
                (upto, CURSOR, seen),
            ).rowcount
            if moved != 1:
                return False
            conn.executemany(
                """
                INSERT INTO webhook_deliveries (id, event_id, job_id, owner, url, event, body,
                                                next_at, created_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT (event_id, url) DO NOTHING
                """,
                [_new_row(delivery, now) for delivery in deliveries],
            )
        return True

    def claim_deliveries(
        self, *, limit: int, lease_seconds: float, busy: Collection[str] = ()
    ) -> list[Delivery]:
        now = self._clock()
        params = {
            "now": now,
            "until": now + lease_seconds,
            "token": secrets.token_hex(16),
            "busy": json.dumps(sorted(busy)),
            "limit": limit,
            "per_url": PER_URL,
        }
        # A read first (under WAL it takes no write turn): most passes find nothing due, and
        # the API's writes then never wait for this one.
        due = f"{_HEADS} SELECT 1 FROM heads LIMIT 1"  # noqa: S608 (a constant)
        if self._db.read().execute(due, params).fetchone():
            with self._db.write() as conn:
                rows = conn.execute(
                    f"""
                    {_HEADS}
                    UPDATE webhook_deliveries SET lease_token = :token, lease_expires_at = :until
                    WHERE id IN (
                        SELECT id FROM heads WHERE n <= :per_url ORDER BY next_at LIMIT :limit)
                    RETURNING *
                    """,  # noqa: S608 (``_HEADS`` is a constant)
                    params,
                ).fetchall()
        else:
            rows = []
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
        params = {**attempt, "now": self._clock()}
        with self._db.write() as conn:
            row = conn.execute(
                """
                UPDATE webhook_deliveries
                SET attempts = attempts + 1, state = :state, lease_token = NULL,
                    lease_expires_at = NULL, next_at = COALESCE(:retry_at, next_at)
                WHERE id = :id AND lease_token = :token
                RETURNING attempts
                """,
                params,
            ).fetchone()
            if row is None:
                return False
            conn.execute(
                """
                INSERT INTO webhook_attempts (delivery_id, attempt, at, status_code, error)
                VALUES (:id, :attempt, :now, :status_code, :error)
                """,
                {**params, "attempt": row[0]},
            )
        return True

    def attempts(self, *, owner: str | None, job_id: str | None, limit: int) -> list[Attempt]:
        rows = (
            self._db.read()
            .execute(
                """
                SELECT d.id AS webhook_id, d.job_id, d.event, d.url, a.attempt, a.at,
                       a.status_code, a.error
                FROM webhook_attempts AS a JOIN webhook_deliveries AS d ON d.id = a.delivery_id
                WHERE (:owner IS NULL OR d.owner = :owner)
                  AND (:job_id IS NULL OR d.job_id = :job_id)
                ORDER BY a.at DESC, a.attempt DESC LIMIT :limit
                """,
                {"owner": owner, "job_id": job_id, "limit": limit},
            )
            .fetchall()
        )
        return [Attempt(**dict(zip(row.keys(), row, strict=True))) for row in rows]

    def key_webhook(self, key_id_or_prefix: str, *, new_secret: str) -> KeyWebhook | None:
        # A read first: a key has its secret after its first webhook, and the deriver asks
        # for every batch of events; only a key without one takes a write turn.
        key_id = _key_id(self._db.read(), key_id_or_prefix)
        if key_id is None:
            return None
        row = (
            self._db.read()
            .execute("SELECT webhook_url, webhook_secret FROM api_keys WHERE id = ?", (key_id,))
            .fetchone()
        )
        if row["webhook_secret"] is not None:
            return KeyWebhook(key_id=key_id, url=row["webhook_url"], secret=row["webhook_secret"])
        with self._db.write() as conn:
            key_id = _key_id(conn, key_id_or_prefix)
            if key_id is None:
                return None
            row = conn.execute(
                """
                UPDATE api_keys SET webhook_secret = COALESCE(webhook_secret, ?) WHERE id = ?
                RETURNING id, webhook_url, webhook_secret
                """,
                (new_secret, key_id),
            ).fetchone()
        return KeyWebhook(key_id=row[0], url=row[1], secret=row[2])

    def set_key_webhook(
        self, key_id_or_prefix: str, *, url: str | None, secret: str | None = None
    ) -> bool:
        with self._db.write() as conn:
            key_id = _key_id(conn, key_id_or_prefix)
            if key_id is not None:
                conn.execute(
                    """
                    UPDATE api_keys
                    SET webhook_url = ?, webhook_secret = COALESCE(?, webhook_secret)
                    WHERE id = ?
                    """,
                    (url, secret, key_id),
                )
        return key_id is not None

    def _drop_deliveries(self, conn: sqlite3.Connection, ids: str) -> None:
        """Retention: drop the deliveries (and attempts) of the jobs in JSON list ``ids``."""
        conn.execute(
            """
            DELETE FROM webhook_attempts WHERE delivery_id IN (
                SELECT id FROM webhook_deliveries
                WHERE job_id IN (SELECT value FROM json_each(?)))
            """,
            (ids,),
        )
        conn.execute(
            "DELETE FROM webhook_deliveries WHERE job_id IN (SELECT value FROM json_each(?))",
            (ids,),
        )


def _key_id(conn: sqlite3.Connection, needle: str) -> str | None:
    """The id of the key ``needle`` names: its id (revoked or not: its jobs still report),
    or the display prefix of one active key. ``ValueError`` if a prefix matches several."""
    rows = conn.execute(
        """
        SELECT id FROM api_keys
        WHERE id = :needle OR (prefix = :needle AND revoked_at IS NULL)
        """,
        {"needle": needle},
    ).fetchall()
    if len(rows) > 1:
        raise ValueError(f"{needle!r} matches {len(rows)} active keys; use the key's id")
    return str(rows[0][0]) if rows else None


def _new_row(delivery: NewDelivery, now: float) -> tuple[Any, ...]:
    return (
        delivery.id,
        delivery.event_id,
        delivery.job_id,
        delivery.owner,
        delivery.url,
        delivery.event,
        json.dumps(delivery.body, separators=(",", ":")),
        now,
        now,
    )


def _delivery(row: sqlite3.Row) -> Delivery:
    return Delivery(
        id=row["id"],
        event_id=row["event_id"],
        job_id=row["job_id"],
        owner=row["owner"],
        url=row["url"],
        event=row["event"],
        body=json.loads(row["body"]),
        attempts=row["attempts"],
        created_at=row["created_at"],
        token=row["lease_token"],
    )
