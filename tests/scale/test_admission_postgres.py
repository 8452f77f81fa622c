"""Admission across API processes on PostgreSQL: two ``reelforge serve`` processes honour one
``Idempotency-Key`` and one key's creates-per-minute, because both count in the database."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.scale.cluster import running_cluster
from tests.service import TEST_KEY, UNIFIED

BODY = {"model": "minimax/hailuo-02", "prompt": "a fox", "duration": 6}


def test_two_api_processes_share_idempotency_keys_and_rate_limits(
    tmp_path: Path, pg_url: str
) -> None:
    limits = {"REELFORGE_KEY_RPM": "3"}
    with running_cluster(
        tmp_path, database_url=pg_url, worker_database_url=pg_url, workers=0, extra_env=limits
    ) as cluster:
        headers = {"Authorization": f"Bearer {TEST_KEY}"}
        one, two = (httpx.Client(base_url=url, headers=headers) for url in cluster.api_urls)
        with one, two:
            first = one.post(UNIFIED, json=BODY, headers={"Idempotency-Key": "x"})
            again = two.post(UNIFIED, json=BODY, headers={"Idempotency-Key": "x"})
            assert (again.status_code, again.json()["id"]) == (200, first.json()["id"])
            other = two.post(
                UNIFIED, json={**BODY, "duration": 10}, headers={"Idempotency-Key": "x"}
            )
            assert (other.status_code, other.json()["error"]["name"]) == (
                422,
                "IdempotencyMismatch",
            )
            assert two.post(UNIFIED, json=BODY).status_code == 200
            assert one.post(UNIFIED, json=BODY).status_code == 200
            refused = [two.post(UNIFIED, json=BODY), one.post(UNIFIED, json=BODY)]
            assert [answer.status_code for answer in refused] == [429, 429]
            assert all(answer.headers["RateLimit-Policy"] == '"rpm";q=3;w=60' for answer in refused)
