"""The PostgreSQL store's admission SQL (``jobs.admission``), run inside the store's
transactions. A create that counts usage first takes ``ADMISSION_LOCK_KEY``, so that no two
admitted creates (from any API process on any machine) count and insert interleaved: the
limits hold exactly. (Creates already take the event log's lock when they append their
``queued`` event, so this adds no new serialisation point, only a longer hold.)"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from reelforge.jobs import base
from reelforge.jobs.admission import (
    DAY_SECONDS,
    IDEMPOTENCY_PENDING_SECONDS,
    IDEMPOTENCY_SECONDS,
    RATE_WINDOW_SECONDS,
    Reservation,
    Usage,
)

if TYPE_CHECKING:
    import psycopg
    from psycopg.rows import DictRow

    PgConnection = psycopg.Connection[DictRow]

ADMISSION_LOCK_KEY: Final = 0x7266_6164_6D69_7473
"""``pg_advisory_xact_lock`` key of a create counting usage (ASCII "rfadmits")."""


def usage(conn: PgConnection, owner: str, now: float | None) -> Usage:
    """``owner``'s usage at the database's time (or the injected ``now``), taking
    ``ADMISSION_LOCK_KEY`` until the caller's transaction ends."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADMISSION_LOCK_KEY,))
    row = conn.execute(
        """
        WITH clock AS (SELECT reelforge_now(%(now)s) AS now),
        recent AS (
            SELECT count(*) AS created, min(created_at) AS oldest FROM jobs, clock
            WHERE owner = %(owner)s AND created_at > clock.now - %(window)s
        ),
        waiting AS (
            SELECT count(*) AS queued,
                   COALESCE(sum((request->>'duration_s')::integer), 0) AS seconds
            FROM jobs WHERE owner = %(owner)s AND status = 'queued'
        ),
        today AS (
            SELECT COALESCE(sum((request->>'duration_s')::integer), 0) AS seconds
            FROM jobs, clock
            WHERE owner = %(owner)s
              AND started_at >= clock.now - mod(clock.now::numeric, %(day)s)
        )
        SELECT clock.now, recent.created, recent.oldest, waiting.queued, waiting.seconds,
               today.seconds AS started,
               (SELECT count(*) FROM jobs WHERE status = 'queued') AS everywhere
        FROM clock, recent, waiting, today
        """,
        {"now": now, "owner": owner, "window": RATE_WINDOW_SECONDS, "day": DAY_SECONDS},
    ).fetchone()
    assert row is not None
    now_, recent, oldest, *counts = row.values()
    return Usage(now_, int(recent), oldest, *(int(count) for count in counts))


def reserve(
    conn: PgConnection, *, owner: str, key: str, fingerprint: str, now: float | None
) -> Reservation | None:
    """``IdempotencyStore.reserve_idempotency`` in the caller's transaction (a concurrent
    insert of the same key waits for this one's commit, then finds the key held)."""
    params = {
        "owner": owner,
        "key": key,
        "fingerprint": fingerprint,
        "now": now,
        "kept": IDEMPOTENCY_SECONDS,
        "pending": IDEMPOTENCY_PENDING_SECONDS,
    }
    conn.execute(
        """
        DELETE FROM idempotency_keys
        WHERE owner = %(owner)s AND key = %(key)s
          AND (created_at <= reelforge_now(%(now)s) - %(kept)s
               OR (job_id IS NULL AND created_at <= reelforge_now(%(now)s) - %(pending)s))
        """,
        params,
    )
    taken = conn.execute(
        """
        INSERT INTO idempotency_keys (owner, key, fingerprint, created_at)
        VALUES (%(owner)s, %(key)s, %(fingerprint)s, reelforge_now(%(now)s))
        ON CONFLICT (owner, key) DO NOTHING
        RETURNING key
        """,
        params,
    ).fetchone()
    if taken is not None:
        return None
    held = conn.execute(
        """
        SELECT idempotency_keys.fingerprint AS held_fingerprint, jobs.* FROM idempotency_keys
        LEFT JOIN jobs ON jobs.id = idempotency_keys.job_id
        WHERE idempotency_keys.owner = %(owner)s AND idempotency_keys.key = %(key)s
        """,
        params,
    ).fetchone()
    assert held is not None
    fields = dict(held)
    fingerprint = fields.pop("held_fingerprint")
    return Reservation(fingerprint, None if fields["id"] is None else base.job_from_row(fields))


def abandon(conn: PgConnection, *, owner: str, key: str) -> None:
    conn.execute(
        "DELETE FROM idempotency_keys WHERE owner = %s AND key = %s AND job_id IS NULL",
        (owner, key),
    )


def bind(conn: PgConnection, *, owner: str, key: str, job_id: str) -> None:
    """Record that ``key`` made ``job_id`` (the create's transaction)."""
    conn.execute(
        "UPDATE idempotency_keys SET job_id = %s WHERE owner = %s AND key = %s",
        (job_id, owner, key),
    )


def prune(conn: PgConnection, now: float | None) -> int:
    """Drop idempotency keys past ``IDEMPOTENCY_SECONDS`` (at most ``base.PRUNE_BATCH``)."""
    return conn.execute(
        """
        DELETE FROM idempotency_keys WHERE (owner, key) IN (
            SELECT owner, key FROM idempotency_keys
            WHERE created_at <= reelforge_now(%s) - %s LIMIT %s
        )
        """,
        (now, IDEMPOTENCY_SECONDS, base.PRUNE_BATCH),
    ).rowcount
