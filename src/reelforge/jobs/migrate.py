"""Versioned migrations of the job database, one runner for SQLite and PostgreSQL.

Migrations are the numbered files ``reelforge/jobs/migrations/<dialect>/NNNN_name.sql``,
versions 1, 2, 3, ... with no gap, the same versions on both dialects. ``schema_migrations``
records the versions applied. Each migration runs in one transaction with its
``schema_migrations`` row, so a failed one leaves the database at the previous version.

- PostgreSQL (many machines): ``upgrade`` (``reelforge db upgrade``) applies the pending
  ones under a database-wide advisory lock, so concurrent upgraders take turns; the store
  never migrates: it calls ``require_current`` and refuses a schema that is missing, older
  or newer than the code's.
- SQLite (one machine): the store applies them as it opens (``upgrade_sqlite``), each in one
  ``BEGIN IMMEDIATE`` transaction, statement by statement. A database made before
  ``schema_migrations`` (a ``schema_version`` table at version v) is adopted first: versions
  1..v recorded as applied, ``schema_version`` dropped.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from importlib.resources import files
from typing import TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    import psycopg

Dialect = Literal["sqlite", "postgres"]

MIGRATIONS: Final = files("reelforge.jobs.migrations")
"""The folder holding one folder of numbered files per dialect."""
LOCK_KEY: Final = 0x7265_656C_666F_7267
"""``pg_advisory_xact_lock`` key held while migrating (the ASCII bytes of "reelforg")."""
UPGRADE_HINT: Final = "run `reelforge db upgrade`"
LEGACY_SQLITE_VERSIONS: Final = 4
"""The last version a ``schema_version`` table (SQLite before ``schema_migrations``) held."""

_FILE_NAME: Final = re.compile(r"(?P<version>\d{4})_[a-z0-9_]+\.sql")

WriteTransaction = Callable[[], AbstractContextManager[sqlite3.Connection]]
"""Opens one ``BEGIN IMMEDIATE`` transaction, committed when the block ends without error."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    """The file name, e.g. ``0001_initial.sql``."""
    sql: str


def migrations(dialect: Dialect) -> list[Migration]:
    """Every migration of ``dialect`` shipped with this code, in version order.

    Raises ``RuntimeError`` if the files are not numbered 1, 2, 3, ... without gaps.
    """
    found = sorted(
        (
            Migration(int(match["version"]), entry.name, entry.read_text(encoding="utf-8"))
            for entry in (MIGRATIONS / dialect).iterdir()
            if (match := _FILE_NAME.fullmatch(entry.name))
        ),
        key=lambda migration: migration.version,
    )
    versions = [migration.version for migration in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migration files must be numbered 1, 2, 3, ...; found {versions}")
    return found


def latest_version(dialect: Dialect = "postgres") -> int:
    """The schema version this code expects."""
    return migrations(dialect)[-1].version


def _refuse_newer(versions: list[int], latest: int) -> None:
    if versions and versions[-1] > latest:
        raise RuntimeError(
            f"the job database is at schema version {versions[-1]}, newer than this code: "
            f"this reelforge knows up to version {latest}; upgrade reelforge"
        )


# --- SQLite -------------------------------------------------------------------------------


def upgrade_sqlite(write: WriteTransaction) -> list[int]:
    """Bring the SQLite database that ``write`` opens transactions on to this code's schema;
    return the versions applied.

    Raises ``RuntimeError`` if the database is newer than this code (or has a
    ``schema_version`` this code never wrote).
    """
    known = migrations("sqlite")
    with write() as conn:
        done = _prepare_sqlite(conn, latest=known[-1].version)
    applied: list[int] = []
    for migration in known:
        if migration.version in done:
            continue
        with write() as conn:
            if _apply_sqlite(conn, migration):
                applied.append(migration.version)
    return applied


def _prepare_sqlite(conn: sqlite3.Connection, *, latest: int) -> set[int]:
    """Create ``schema_migrations``, adopt a legacy ``schema_version``; the versions applied."""
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY CHECK (version >= 1),
            applied_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
        )
        """
    )
    legacy = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
    ).fetchone()
    if legacy is not None:
        _adopt_schema_version(conn)
    versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations")]
    _refuse_newer(sorted(versions), latest)
    return set(versions)


def _adopt_schema_version(conn: sqlite3.Connection) -> None:
    """Record the versions a pre-``schema_migrations`` database reached, drop its table."""
    versions = [row[0] for row in conn.execute("SELECT version FROM schema_version")]
    if len(versions) != 1 or not 1 <= versions[0] <= LEGACY_SQLITE_VERSIONS:
        raise RuntimeError(
            f"the job database has schema versions {versions}; this reelforge knows "
            f"1 to {LEGACY_SQLITE_VERSIONS} in its schema_version table"
        )
    conn.executemany(
        "INSERT INTO schema_migrations (version) VALUES (?)",
        [(version,) for version in range(1, versions[0] + 1)],
    )
    conn.execute("DROP TABLE schema_version")


def _apply_sqlite(conn: sqlite3.Connection, migration: Migration) -> bool:
    """Apply ``migration`` in the caller's transaction unless another process just did."""
    found = conn.execute(
        "SELECT 1 FROM schema_migrations WHERE version = ?", (migration.version,)
    ).fetchone()
    if found is not None:
        return False
    for statement in sqlite_statements(migration.sql):
        conn.execute(statement)
    conn.execute("INSERT INTO schema_migrations (version) VALUES (?)", (migration.version,))
    return True


def sqlite_statements(script: str) -> Iterator[str]:
    """The statements of ``script``, one at a time (``executescript`` would commit the
    migration's transaction). Raises ``ValueError`` on an unfinished last statement."""
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            yield pending.strip()
            pending = ""
    leftover = [line for line in pending.splitlines() if line.strip() and not _comment(line)]
    if leftover:
        raise ValueError(f"an SQL statement is missing its ';': {pending.strip()!r}")


def _comment(line: str) -> bool:
    return line.strip().startswith("--")


# --- PostgreSQL ---------------------------------------------------------------------------


def upgrade(url: str) -> list[int]:
    """Apply the pending PostgreSQL migrations to the database at ``url``; return the
    versions applied.

    Raises ``RuntimeError`` if the database's schema is newer than this code's.
    """
    psycopg = _psycopg()
    known = migrations("postgres")
    applied: list[int] = []
    with psycopg.connect(url, autocommit=True) as conn:
        for migration in known:
            if _apply_postgres(conn, migration, latest=known[-1].version):
                applied.append(migration.version)
    return applied


def _apply_postgres(conn: psycopg.Connection[Any], migration: Migration, *, latest: int) -> bool:
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
    from psycopg.rows import tuple_row

    with conn.cursor(row_factory=tuple_row) as cursor:
        cursor.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
        if cursor.fetchone() != (True,):
            return []
        cursor.execute("SELECT version FROM schema_migrations ORDER BY version")
        return [version for (version,) in cursor.fetchall()]


def require_current(conn: psycopg.Connection[Any]) -> None:
    """Raise ``RuntimeError`` unless the database holds exactly this code's schema."""
    versions = applied_versions(conn)
    latest = latest_version("postgres")
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


def _psycopg() -> Any:
    """The ``psycopg`` module, with an install hint if it is missing (SQLite needs none)."""
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ImportError("PostgreSQL migrations need: pip install 'reelforge[postgres]'") from exc
    return psycopg
