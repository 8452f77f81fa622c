"""What the tests do to a running cluster: SIGKILL workers, cut their database connections."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.scale.cluster import Cluster
from tests.scale.proxy import Proxy


def upstream_of(url: str) -> tuple[str, int]:
    """The TCP address of the PostgreSQL server at ``url``."""
    params = conninfo_to_dict(url)
    return str(params.get("host") or "127.0.0.1"), int(params.get("port") or 5432)


def via(proxy: Proxy, url: str) -> str:
    """``url`` (its database, user, options) reached through ``proxy``."""
    return make_conninfo(url, host="127.0.0.1", hostaddr="127.0.0.1", port=str(proxy.port))


Plan = list[tuple[float, Literal["kill", "cut"]]]
"""Faults to inflict: (seconds from the start, what)."""


@dataclass
class Faults:
    kills: int = 0
    mid_job: int = 0
    """Kills of a worker that held a job's lease at that moment."""
    cuts: int = 0
    connections_cut: int = 0

    def summary(self) -> str:
        return (
            f"kills {self.kills} ({self.mid_job} mid-job), cuts {self.cuts} "
            f"({self.connections_cut} connections)"
        )


def inflict(cluster: Cluster, proxy: Proxy, url: str, plan: Plan, *, seed: int) -> Faults:
    """Play ``plan``: at each of its times (seconds from now), a ``"kill"`` SIGKILLs a
    random worker, one holding a lease if any does, and restarts it at once; a ``"cut"``
    closes every proxied connection. Workers that ended on their own are restarted after
    each fault."""
    rng = random.Random(seed)
    faults = Faults()
    began = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        for at, kind in sorted(plan):
            time.sleep(max(0.0, began + at - time.monotonic()))
            if kind == "kill":
                busy = _lease_holders(conn) & {process.pid for process in cluster.workers}
                slots = [
                    slot for slot, process in enumerate(cluster.workers) if process.pid in busy
                ]
                pid = cluster.kill(rng.choice(slots or range(len(cluster.workers))))
                faults.kills += 1
                faults.mid_job += pid in _lease_holders(conn)
            else:
                faults.connections_cut += proxy.cut()
                faults.cuts += 1
            cluster.revive()
    return faults


def _lease_holders(conn: psycopg.Connection[tuple[Any, ...]]) -> set[int]:
    """Pids of the workers named as holders of a live or lapsed lease."""
    rows = conn.execute("SELECT worker_id FROM jobs WHERE status = 'generating'").fetchall()
    return {int(worker_id.rsplit(":", 2)[1]) for (worker_id,) in rows}
