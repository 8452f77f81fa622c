"""Versioned migrations of the PostgreSQL job database.

Migrations are the numbered files ``reelforge/jobs/migrations/postgres/NNNN_name.sql``,
versions 1, 2, 3, ... with no gap. ``schema_migrations`` records the versions applied.
``upgrade`` applies the pending ones in order, each in its own transaction under a
database-wide advisory lock, so concurrent upgraders take turns and each version is
applied once. The store never migrates: it calls ``require_current`` and refuses to start
on a schema that is missing, older or newer than the code's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, Final

try:
    import psycopg
    from psycopg.rows import tuple_row
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("PostgreSQL migrations need: pip install 'reelforge[postgres]'") from exc

MIGRATIONS: Final = files("reelforge.jobs.migrations") / "postgres"
LOCK_KEY: Final = 0x7265_656C_666F_7267
"""``pg_advisory_xact_lock`` key held while migrating (the ASCII bytes of "reelforg")."""
UPGRADE_HINT: Final = "run `reelforge db upgrade`"

_FILE_NAME: Final = re.compile(r"(?P<version>\d{4})_[a-z0-9_]+\.sql")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    """The file name, e.g. ``0001_initial.sql``."""
    sql: str


def migrations() -> list[Migration]:
    """Every migration shipped with this code, in version order.

    Raises ``RuntimeError`` if the files are not numbered 1, 2, 3, ... without gaps.
    """
    found = sorted(
        (
            Migration(int(match["version"]), entry.name, entry.read_text(encoding="utf-8"))
            for entry in MIGRATIONS.iterdir()
            if (match := _FILE_NAME.fullmatch(entry.name))
        ),
        key=lambda migration: migration.version,
    )
    versions = [migration.version for migration in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migration files must be numbered 1, 2, 3, ...; found {versions}")
    return found


def latest_version() -> int:
    """The schema version this code expects."""
    return migrations()[-1].version


def upgrade(url: str) -> list[int]:
    """Apply the pending migrations to the database at ``url``; return the versions applied.

    Each migration runs in one transaction with its ``schema_migrations`` row, so a failed
    one leaves the database at the previous version. Raises ``RuntimeError`` if the
    database's schema is newer than this code's.
    """
    known = migrations()
    applied: list[int] = []
    with psycopg.connect(url, autocommit=True) as conn:
        for migration in known:
            if _apply(conn, migration, latest=known[-1].version):
                applied.append(migration.version)
    return applied


def _apply(conn: psycopg.Connection[Any], migration: Migration, *, latest: int) -> bool:
    """Apply ``migration`` unless it already is; True if this call applied it."""
    with conn.transaction():
        # Taken first: whoever waited here sees the previous holder's committed versions.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
        conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version integer PRIMARY KEY CHECK (version >= 1),
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        versions = applied_versions(conn)
        _refuse_newer(versions, latest)
        if migration.version in versions:
            return False
        conn.execute(migration.sql.encode("utf-8"))
        conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (migration.version,))
    return True


def applied_versions(conn: psycopg.Connection[Any]) -> list[int]:
    """Versions recorded in ``schema_migrations``, ascending; empty if there is no table."""
    with conn.cursor(row_factory=tuple_row) as cursor:
        cursor.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
        if cursor.fetchone() != (True,):
            return []
        cursor.execute("SELECT version FROM schema_migrations ORDER BY version")
        return [version for (version,) in cursor.fetchall()]


def require_current(conn: psycopg.Connection[Any]) -> None:
    """Raise ``RuntimeError`` unless the database holds exactly this code's schema."""
    versions = applied_versions(conn)
    latest = latest_version()
    if not versions:
        raise RuntimeError(f"the job database has no reelforge schema; {UPGRADE_HINT}")
    _refuse_newer(versions, latest)
    if versions != list(range(1, versions[-1] + 1)):
        raise RuntimeError(
            f"the job database records unknown schema versions {versions}; "
            f"this reelforge knows versions 1 to {latest}"
        )
    if versions[-1] < latest:
        raise RuntimeError(
            f"the job database is at schema version {versions[-1]}, this reelforge needs "
            f"{latest}; {UPGRADE_HINT}"
        )


def _refuse_newer(versions: list[int], latest: int) -> None:
    if versions and versions[-1] > latest:
        raise RuntimeError(
            f"the job database is at schema version {versions[-1]}, newer than this code: "
            f"this reelforge knows up to version {latest}; upgrade reelforge"
        )
