"""The crash test's own test: stale completions, made to happen, are caught by its tally.

A worker that lost its lease must not record its result. Here that is forced on PostgreSQL
with real worker processes (``stalling_worker``): for one marked job, the worker of
the first attempt (A) stops itself (SIGSTOP) just before recording it; its lease lapses; a
second worker (B) takes the job over and stops at the same point. The test then resumes A,
waits until A's completion is accepted or refused, and resumes B. Around that, 57 other
generations go through both APIs while workers are killed and connections cut, as in
``test_crash_postgres``, on a smaller scale.

- Real store: A is refused, B completes the job; the tally holds.
- ``complete`` conditional on the status only: A completes the job while B holds its
  lease, so the tally finds jobs completed under a lost lease. B is then refused by the
  status, so no job completes twice: the status condition alone prevents that, and the
  video files add up; only the trigger's record of the token shows the fault.
- ``complete`` conditional on nothing: B completes the job again, over A's result. Jobs
  complete twice and A's video file is left behind, so the files do not add up either.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import pytest

from tests.scale import audit
from tests.scale.cluster import Cluster, running_cluster
from tests.scale.faults import Plan, inflict, upstream_of, via
from tests.scale.proxy import Proxy
from tests.scale.stalling_worker import PAUSE
from tests.scale.traffic import HEADERS, Submitter, wait_finished
from tests.service import LEGACY

T = TypeVar("T")

STAGED = 1
PLAIN = 57
PLAN: Plan = [(0.5, "kill"), (1.0, "cut"), (1.5, "kill"), (2.0, "cut"), (2.5, "kill")]
"""Faults while the first plain creates flow; none while a takeover is staged."""
SEED = 7
LEASE_S = "3"
"""Longer than the crash test's 1.5 s: B's lease must outlast the test's resuming of A and
its wait for A's answer (~0.1 s), or a third worker would take the job from B."""
FINISH_S = 60.0
PAUSED_S = 45.0  # generous: a loaded 2-core machine is slow to settle a lease and re-render
"""Longest wait for a worker to claim a marked job and stop itself."""


@dataclass(frozen=True)
class Holder:
    pid: int
    token: str


@dataclass(frozen=True)
class Takeover:
    """One marked job: whether A's and B's completions were accepted."""

    job_id: str
    first: bool
    second: bool


def wait_for(check: Callable[[], T | None], what: str, timeout: float) -> T:
    """Poll ``check`` every 20 ms until it returns something; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found is not None:
            return found
        time.sleep(0.02)
    raise AssertionError(f"no {what} within {timeout} s")


def stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped by a signal (state T in ``/proc``)."""
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    return state in ("T", "t")


def paused_holder(conn: psycopg.Connection[Any], job_id: str, attempt: int) -> Holder:
    """The worker of ``job_id``'s ``attempt``-th claim, once it has stopped itself."""

    def check() -> Holder | None:
        row = conn.execute(
            "SELECT token, worker_id FROM audit_claims WHERE job_id = %s AND attempt = %s",
            (job_id, attempt),
        ).fetchone()
        if row is None:
            return None
        pid = int(row[1].rsplit(":", 2)[1])
        return Holder(pid, row[0]) if stopped(pid) else None

    return wait_for(check, f"paused worker on attempt {attempt} of {job_id}", PAUSED_S)


def resume(cluster: Cluster, conn: psycopg.Connection[Any], job_id: str, holder: Holder) -> bool:
    """SIGCONT ``holder``; True once its completion is accepted, False once refused."""
    key = f"videos/{audit.video_name(job_id, holder.token)}"
    os.kill(holder.pid, signal.SIGCONT)

    def check() -> bool | None:
        accepted = conn.execute(
            "SELECT 1 FROM audit_completions WHERE job_id = %s AND video_key = %s", (job_id, key)
        ).fetchone()
        if accepted is not None:
            return True
        return False if f"lease on job {job_id} was lost" in cluster.log(holder.pid) else None

    return wait_for(check, f"answer to the completion of {job_id} by {holder.pid}", 10)


def take_over(cluster: Cluster, url: str, index: int) -> Takeover:
    """Create a marked job; let A stop on it, B take it over and stop; resume A, then B."""
    with httpx.Client(base_url=cluster.api_urls[index % 2], headers=HEADERS) as client:
        response = client.post(LEGACY, json={"model": "preview", "prompt": f"{PAUSE} {index}"})
    response.raise_for_status()
    job_id: str = response.json()["generation_id"]
    with psycopg.connect(url, autocommit=True) as conn:
        first = paused_holder(conn, job_id, attempt=1)
        second = paused_holder(conn, job_id, attempt=2)
        return Takeover(
            job_id, resume(cluster, conn, job_id, first), resume(cluster, conn, job_id, second)
        )


@pytest.mark.parametrize("store", ["real", "tokenless", "unguarded"])
def test_the_tally_catches_a_completion_made_under_a_lost_lease(
    pg_url: str, tmp_path: Path, store: str
) -> None:
    began = time.monotonic()
    audit.install(pg_url)
    command = (sys.executable, "-m", "tests.scale.stalling_worker", store)
    with (
        Proxy(upstream_of(pg_url)) as proxy,
        running_cluster(
            tmp_path,
            database_url=pg_url,
            worker_database_url=via(proxy, pg_url),
            worker_command=command,
            extra_env={"REELFORGE_LEASE_SECONDS": LEASE_S},
        ) as cluster,
    ):
        submitter = Submitter(cluster.api_urls, PLAIN, 0.15, "Clip")
        submitter.start()
        faults = inflict(cluster, proxy, pg_url, PLAN, seed=SEED)
        takeovers = [take_over(cluster, pg_url, index) for index in range(STAGED)]
        submitter.finish(timeout=30)
        ids = submitter.ids + [takeover.job_id for takeover in takeovers]
        waited = wait_finished(pg_url, ids, FINISH_S)
        cluster.drain_workers()
        result = audit.tally(pg_url, ids, cluster)
    staged = sorted(takeover.job_id for takeover in takeovers)
    answers = {(takeover.first, takeover.second) for takeover in takeovers}
    report = (
        f"{store}: {result.summary()}; (A, B) completions accepted {sorted(answers)}; "
        f"{faults.summary()}; violations {result.violations()}; waited {waited:.1f} s; "
        f"runtime {time.monotonic() - began:.1f} s"
    )
    print(f"\n{report}")
    total = PLAIN + STAGED
    assert (result.created, result.completed, result.errors) == (total, total, 0), report
    if store == "real":
        assert answers == {(False, True)}, report
        assert result.violations() == [], report
    elif store == "tokenless":
        assert answers == {(True, False)}, report
        assert (result.stale, result.twice, result.stray) == (staged, [], []), report
        assert result.violations() == [f"completed under a lost lease: {staged}"], report
    else:
        assert answers == {(True, True)}, report
        assert (result.stale, result.twice, len(result.stray)) == (staged, staged, STAGED), report
        assert result.files - result.left_by_kills - result.left_by_cuts == PLAIN + 2 * STAGED
