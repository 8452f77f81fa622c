from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.postgres import throwaway_schema


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL on a fresh schema holding the job store's tables (skips without PostgreSQL,
    fails instead under ``REELFORGE_REQUIRE_PG=1``)."""
    with throwaway_schema() as url:
        yield url
