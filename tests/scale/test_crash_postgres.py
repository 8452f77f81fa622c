"""Scale-out under crashes: 2 API processes and 3 worker processes on one PostgreSQL
schema and one data directory; 300 generations while workers are SIGKILLed 20 times and
every worker's database connection is cut 10 times. Every generation answered 200 must
complete exactly once.

The workers reach PostgreSQL through a ``Proxy`` of the test's own, the APIs directly.
Jobs render 136x76 previews (``REELFORGE_PREVIEW_SCALE=0.1``, ~20 ms each) under a 1.5 s
lease, with 10 attempts allowed, so no job can run out of attempts here. The creates come
in 10 bursts of 30, alternating between the APIs; two kills and a cut land in each burst,
while the workers are busy, and a kill takes a worker holding a lease when there is one
(else any), so most kills interrupt a job.

A trigger records every claim and completion (``tests/scale/audit.py``). A worker killed
after storing its video but before recording it leaves that file behind (nothing can
remove it then); the tally counts such files apart, and any other file nobody points to
fails the test. Run with ``pytest -s`` to see the figures, also in the assertions' message.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.scale import audit
from tests.scale.cluster import running_cluster
from tests.scale.faults import Plan, inflict, upstream_of, via
from tests.scale.proxy import Proxy
from tests.scale.traffic import Submitter, answered_completed, wait_finished

GENERATIONS = 180
BURSTS = 6
BURST_EVERY_S = 3.0
IN_BURST: Plan = [(0.1, "kill"), (0.2, "cut"), (0.35, "kill")]
PLAN: Plan = [
    (burst * BURST_EVERY_S + offset, kind) for burst in range(BURSTS) for offset, kind in IN_BURST
]
"""Two kills and a cut in each burst of creates, while workers are busy with it."""
KILLS, CUTS = (sum(kind == wanted for _, kind in PLAN) for wanted in ("kill", "cut"))
FINISH_S = 120.0
SEED = 20240611


def test_every_generation_completes_once_through_worker_kills_and_cut_connections(
    pg_url: str, tmp_path: Path
) -> None:
    began = time.monotonic()
    audit.install(pg_url)
    with (
        Proxy(upstream_of(pg_url)) as proxy,
        running_cluster(
            tmp_path, database_url=pg_url, worker_database_url=via(proxy, pg_url)
        ) as cluster,
    ):
        submitter = Submitter(
            cluster.api_urls, GENERATIONS, BURST_EVERY_S, "Clip", burst=GENERATIONS // BURSTS
        )
        submitter.start()
        faults = inflict(cluster, proxy, pg_url, PLAN, seed=SEED)
        submitter.finish(timeout=30)
        waited = wait_finished(pg_url, submitter.ids, FINISH_S)
        cluster.revive()
        answered = answered_completed(cluster.api_urls, submitter.ids)
        # A worker whose lease lapsed may still be storing a video another worker has
        # already recorded: let every attempt settle (it discards its file) before counting.
        cluster.drain_workers()
        result = audit.tally(pg_url, submitter.ids, cluster)
    report = (
        f"{result.summary()}; answered completed by the APIs {answered}; creates per API "
        f"{submitter.per_api}, refused {submitter.failures}; {faults.summary()}; workers "
        f"that ended on their own {cluster.exits}; waited {waited:.1f} s after the last "
        f"create; runtime {time.monotonic() - began:.1f} s"
    )
    print(f"\n{report}")
    assert (result.created, result.completed, result.errors, result.lost) == (
        GENERATIONS,
        GENERATIONS,
        0,
        0,
    ), report
    assert answered == GENERATIONS, report
    assert result.completions == GENERATIONS, report
    assert result.violations() == [], report
    assert (faults.kills, faults.cuts) == (KILLS, CUTS), report
    assert cluster.exits == [], report
