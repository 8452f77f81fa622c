"""A PostgreSQL server for tests, with one throwaway schema per test.

The server is ``REELFORGE_TEST_DATABASE_URL`` (default: the local ``test`` database). If it
cannot be reached, tests that need it skip, or fail when ``REELFORGE_REQUIRE_PG=1`` (CI).
Each test gets a fresh schema and a URL whose connections use it (``search_path`` in the
URL's ``options``), so tests never see each other's tables; the schema is dropped after.
"""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from reelforge.jobs.migrate import upgrade

DEFAULT_URL: Final = "postgresql://postgres@127.0.0.1:5432/test"


def server_url() -> str:
    """The test server's URL; skips the test (fails under ``REELFORGE_REQUIRE_PG=1``) if the
    server is unreachable."""
    url = os.environ.get("REELFORGE_TEST_DATABASE_URL", DEFAULT_URL)
    problem = _unreachable(url)
    if problem is not None:
        where = conninfo_to_dict(url)
        reason = (
            f"PostgreSQL at {where.get('host')}:{where.get('port')}/{where.get('dbname')} is "
            f"unreachable ({problem}); set REELFORGE_TEST_DATABASE_URL to run these tests"
        )
        if os.environ.get("REELFORGE_REQUIRE_PG") == "1":
            pytest.fail(f"{reason} (REELFORGE_REQUIRE_PG=1)")
        pytest.skip(reason)
    return url


@functools.cache
def _unreachable(url: str) -> str | None:
    """Why the server at ``url`` cannot be used, or None if it can (asked once per process)."""
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        return str(exc).strip().splitlines()[0]
    return None


def with_options(url: str, **params: str) -> str:
    """``url`` with more connection parameters (``options``, ``application_name``, ...)."""
    if "://" not in url:
        return make_conninfo(url, **params)
    query = "&".join(f"{name}={quote(value, safe='')}" for name, value in params.items())
    return f"{url}{'&' if '?' in url else '?'}{query}"


@contextmanager
def throwaway_schema(*, migrated: bool = True) -> Iterator[str]:
    """Create a fresh schema on the test server, yield a URL using it, drop it afterwards.

    With ``migrated`` the schema holds the job store's tables (``upgrade`` ran into it);
    otherwise it is empty. Close every store on the URL before the block ends.
    """
    url = server_url()
    name = f"rf_test_{secrets.token_hex(6)}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        schema_url = with_options(url, options=f"-c search_path={name}")
        if migrated:
            upgrade(schema_url)
        yield schema_url
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))
