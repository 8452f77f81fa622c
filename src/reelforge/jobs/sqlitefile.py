"""One SQLite database file shared by processes: WAL mode, write turns, per-thread readers.

Concurrency model: each ``SQLiteFile`` owns one write connection guarded by a lock, so one
instance may be shared by the threads of a process (they take turns; the work per call is
a few statements). Processes coordinate through SQLite's own file locking: WAL mode lets
readers run beside the single writer, every write is one ``BEGIN IMMEDIATE`` transaction
(the write lock is taken up front, so a select-then-update cannot interleave with another
writer's), taken in turns through a lock on ``<database>.turn`` so that no process starves
the others, and ``busy_timeout`` makes a writer wait instead of failing. Reads go through one
read-only connection per thread: under WAL they never wait for a writer.
Open one per process, after any fork; one used from another process raises.

Durability: ``synchronous=FULL`` makes each commit reach the disk before the call returns.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Final

from reelforge.retry import retrying

MIN_SQLITE_VERSION: Final = (3, 35, 0)
"""``UPDATE ... RETURNING`` arrived in SQLite 3.35."""
BUSY_TIMEOUT_MS: Final = 5000
MAX_TURN_PAUSE_S: Final = 0.002


class SQLiteFile:
    """The connections to one database file (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        """Open (creating if missing) the database at ``path`` in WAL mode.

        Raises ``RuntimeError`` if the SQLite library is older than 3.35 or the file cannot
        be put in WAL mode.
        """
        _require_sqlite_version(sqlite3.sqlite_version)
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._path = path
        turns = os.open(f"{path}.turn", os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        self._turns = os.fdopen(turns, "a+b")
        _create_owner_only(path)  # SQLite gives its -wal and -shm files the same mode
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._readers = threading.local()
        self._all_readers: list[sqlite3.Connection] = []
        try:
            self._configure()
        except BaseException:
            self.close()
            raise

    def _configure(self) -> None:
        self._conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        mode = self._enter_wal()
        if mode != "wal":
            raise RuntimeError(f"the job database needs WAL mode; SQLite kept {mode!r}")
        self._conn.execute("PRAGMA synchronous = FULL")
        self._conn.execute("PRAGMA foreign_keys = ON")

    def _enter_wal(self) -> str:
        """Switch the database to WAL; returns the journal mode SQLite reports after.

        Several processes opening a new database at once race to convert it, and SQLite
        answers the losers "database is locked" at once, without its busy handler.
        """
        row = retrying(
            lambda: self._conn.execute("PRAGMA journal_mode = WAL").fetchone(),
            retry_on=lambda exc: isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc),
            seconds=BUSY_TIMEOUT_MS / 1000,
            pause=0.01,
            max_pause=0.01,
        )
        return str(row[0])

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: takes the write lock first, commits or rolls back."""
        with self._locked() as conn, self._writer_turn():
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _writer_turn(self) -> Iterator[None]:
        """Processes take turns at writing through a lock on a file beside the database.

        SQLite's own busy handler retries with sleeps growing to 100 ms, so a process
        writing back to back can starve another one (create p99 1.4 s with two API
        processes); this lock is retried every 2 ms at most, so a waiting writer gets the
        next turn. After ``busy_timeout`` it gives up as SQLite would.
        """
        try:
            retrying(
                lambda: fcntl.flock(self._turns, fcntl.LOCK_EX | fcntl.LOCK_NB),
                retry_on=lambda exc: isinstance(exc, BlockingIOError),
                seconds=BUSY_TIMEOUT_MS / 1000,
                pause=0.0002,
                max_pause=MAX_TURN_PAUSE_S,
            )
        except BlockingIOError:
            raise sqlite3.OperationalError(
                "database is locked: another process kept its write turn"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(self._turns, fcntl.LOCK_UN)

    @contextmanager
    def _locked(self) -> Iterator[sqlite3.Connection]:
        self._require_same_process()
        with self._lock:
            yield self._conn

    def read(self) -> sqlite3.Connection:
        """This thread's read-only connection (autocommit: each query sees the latest commit)."""
        self._require_same_process()
        reader: sqlite3.Connection | None = getattr(self._readers, "conn", None)
        if reader is None:
            reader = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            reader.row_factory = sqlite3.Row
            reader.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            reader.execute("PRAGMA query_only = ON")
            self._readers.conn = reader
            with self._lock:
                self._all_readers.append(reader)
        return reader

    def _require_same_process(self) -> None:
        if os.getpid() != self._pid:
            raise RuntimeError("SQLiteJobStore was opened in another process; open one per process")

    def close(self) -> None:
        with self._lock:
            for reader in self._all_readers:
                reader.close()
            self._conn.close()
            self._turns.close()


def _create_owner_only(path: Path) -> None:
    """Create ``path`` empty with mode 0600 (an empty file is a valid new database) unless it
    exists; an existing database keeps its mode."""
    with suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _require_sqlite_version(version: str) -> None:
    found = tuple(int(part) for part in version.split("."))
    if found < MIN_SQLITE_VERSION:
        needed = ".".join(str(part) for part in MIN_SQLITE_VERSION)
        raise RuntimeError(
            f"SQLite {version} is too old for the job store; it needs {needed} or newer "
            "(for UPDATE ... RETURNING)"
        )
