"""What the job store contract tests share: the backends, a fake clock and small helpers.

A backend opens any number of stores on one database (to test durability and concurrency
across instances) and can write past the store (to test the schema's constraints and rows
written by older code). To add a backend, add a class with ``open``, ``insert_raw``,
``set_column`` and ``integrity_error``, and a param of the ``backend`` fixture (conftest).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import psycopg
from psycopg import sql

from reelforge.jobs.model import Job, Lease, Store
from reelforge.jobs.postgres import PostgresJobStore
from reelforge.jobs.sqlite import SQLiteJobStore
from reelforge.request import JobRequest

Clock = Callable[[], float]
T0 = 1_700_000_000.0
REQUEST = JobRequest(prompt="a fox in snow", options={"extra": [1, None, "é"]})


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Backend(Protocol):
    integrity_error: ClassVar[type[Exception]]

    def open(self, clock: Clock) -> Store: ...

    def insert_raw(self, row: dict[str, object]) -> None: ...

    def set_column(self, job_id: str, column: str, value: object) -> None: ...


@dataclass(frozen=True)
class SQLiteBackend:
    path: Path
    integrity_error: ClassVar[type[Exception]] = sqlite3.IntegrityError

    def open(self, clock: Clock) -> Store:
        return SQLiteJobStore(self.path, clock=clock)

    def insert_raw(self, row: dict[str, object]) -> None:
        columns = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        self._execute(f"INSERT INTO jobs ({columns}) VALUES ({marks})", tuple(row.values()))

    def set_column(self, job_id: str, column: str, value: object) -> None:
        self._execute(f"UPDATE jobs SET {column} = ? WHERE id = ?", (value, job_id))

    def _execute(self, query: str, params: tuple[object, ...]) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute(query, params)
        finally:
            conn.close()


@dataclass(frozen=True)
class PostgresBackend:
    url: str
    """A URL whose ``search_path`` is a throwaway schema holding the store's tables."""
    integrity_error: ClassVar[type[Exception]] = psycopg.IntegrityError

    def open(self, clock: Clock) -> Store:
        return PostgresJobStore(self.url, clock=clock)

    def insert_raw(self, row: dict[str, object]) -> None:
        query = sql.SQL("INSERT INTO jobs ({}) VALUES ({})").format(
            sql.SQL(", ").join(map(sql.Identifier, row)),
            sql.SQL(", ").join(sql.Placeholder() * len(row)),
        )
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(query, tuple(row.values()))

    def set_column(self, job_id: str, column: str, value: object) -> None:
        query = sql.SQL("UPDATE jobs SET {} = %s WHERE id = %s").format(sql.Identifier(column))
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(query, (value, job_id))


def create(
    store: Store,
    *,
    model: str = "preview",
    max_attempts: int = 3,
    owner: str = "key-a",
    request: JobRequest = REQUEST,
) -> Job:
    return store.create(owner=owner, model=model, request=request, max_attempts=max_attempts)


def claim(store: Store, worker_id: str = "w1", lease_seconds: float = 30) -> Lease:
    lease = store.claim(worker_id=worker_id, lease_seconds=lease_seconds)
    assert lease is not None
    return lease


def current(store: Store, job_id: str) -> Job:
    job = store.get(job_id)
    assert job is not None
    return job
