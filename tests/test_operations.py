"""Operator commands end to end: ``reelforge db upgrade`` on PostgreSQL and ``reelforge serve
--api-processes 2`` sharing one port and one store."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg

from tests.postgres import throwaway_schema
from tests.service import LEGACY, TEST_KEY, free_port, spawned_children

START_S = 30.0


def environment(**values: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("REELFORGE_")}
    env.update(values)
    return env


def reelforge(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reelforge", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_db_upgrade_applies_every_migration_once() -> None:
    with throwaway_schema(migrated=False) as url:
        env = environment(REELFORGE_DATABASE_URL=url)
        first = reelforge("db", "upgrade", env=env)
        assert first.returncode == 0, first.stderr
        assert "applied migrations [1, 2, 3, 4" in first.stdout
        again = reelforge("db", "upgrade", env=env)
        assert again.returncode == 0, again.stderr
        assert "up to date" in again.stdout
        with psycopg.connect(url) as conn:
            tables = {
                row[0]
                for row in conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                )
            }
        assert {"jobs", "job_events", "api_keys", "schema_migrations"} <= tables


def test_db_upgrade_without_a_database_url_says_what_to_set(tmp_path: Path) -> None:
    done = reelforge("db", "upgrade", env=environment(REELFORGE_DATA_DIR=str(tmp_path)))
    assert done.returncode == 2
    assert "REELFORGE_DATABASE_URL" in done.stderr


def test_two_api_processes_share_the_port_and_the_store(tmp_path: Path) -> None:
    port = free_port()
    env = environment(
        REELFORGE_DATA_DIR=str(tmp_path / "data"),
        REELFORGE_PORT=str(port),
        REELFORGE_API_KEY=TEST_KEY,
        REELFORGE_READ_TIMEOUT_SECONDS="1",
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "reelforge", "serve", "--workers", "0", "--api-processes", "2"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_S
        while log.read_text().count("Application startup complete") < 2:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"serve did not start:\n{log.read_text()}"
            time.sleep(0.05)
        assert len(spawned_children(process.pid)) == 2
        base = f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {TEST_KEY}"}
        ids = []
        for _ in range(6):  # a new connection each: the kernel spreads them over both
            with httpx.Client(base_url=base, headers=headers) as client:
                created = client.post(LEGACY, json={"model": "preview", "prompt": "x"})
                assert created.status_code == 200, created.text
                ids.append(created.json()["generation_id"])
        for generation_id in ids:
            with httpx.Client(base_url=base, headers=headers) as client:
                answer = client.get(LEGACY, params={"generation_id": generation_id})
                assert answer.status_code == 200
                assert answer.json()["status"] == "queued"
                assert "server" not in answer.headers  # serve passes api.serving's options
        with socket.create_connection(("127.0.0.1", port), timeout=30) as silent:
            started = time.monotonic()
            assert silent.recv(1024).startswith(b"HTTP/1.1 408 ")  # the read deadline
            assert time.monotonic() - started < 1 + 3
    finally:
        process.terminate()
        process.wait(30)
