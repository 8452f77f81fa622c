from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from reelforge.jobs.model import Store
from tests.jobs.contract import Backend, FakeClock, PostgresBackend, SQLiteBackend
from tests.postgres import throwaway_schema


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL on a fresh schema holding the job store's tables (skips without PostgreSQL)."""
    with throwaway_schema() as url:
        yield url


@pytest.fixture
def pg_empty_url() -> Iterator[str]:
    """A URL on a fresh, empty schema (skips without PostgreSQL)."""
    with throwaway_schema(migrated=False) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Each backend in turn, on a fresh database."""
    if request.param == "sqlite":
        yield SQLiteBackend(tmp_path / "jobs.db")
        return
    with throwaway_schema() as url:
        yield PostgresBackend(url)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(backend: Backend, clock: FakeClock) -> Iterator[Store]:
    opened = backend.open(clock)
    yield opened
    opened.close()
