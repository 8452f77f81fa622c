"""``reelforge worker`` with test-side changes, for the stale-completion tests:
``python -m tests.scale.stalling_worker real|tokenless|unguarded``.

It runs ``reelforge.runtime.run_worker(Settings())``, with two patches made here, never in
``src``:

- Before it records a job whose prompt contains ``PAUSE``, on the job's first two attempts,
  the worker stops itself (SIGSTOP) until the test sends SIGCONT. Its heartbeat has ended
  by then, so its lease lapses and another worker takes the job over, as after a long GC
  pause or a swapped-out process, but at a point the test can rely on.
- ``PostgresJobStore.finish`` with ``Completed`` (what ``complete`` calls) is conditional on
  the job's status only (``tokenless``), on nothing but its id (``unguarded``), or, with
  ``real``, unchanged: on the lease token. Only completions are loosened; heartbeats,
  failures, ``release`` and ``requeue`` keep the token.
"""

from __future__ import annotations

import inspect
import logging
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any, Final

import pytest

from reelforge.jobs.model import Completed, Lease, Outcome
from reelforge.jobs.postgres import PgConnection, PostgresJobStore
from reelforge.runtime import run_worker
from reelforge.settings import Settings
from reelforge.worker import Worker

PAUSE: Final = "PAUSE"
"""Jobs whose prompt contains this stop their worker before it records them."""
PAUSED_ATTEMPTS: Final = 2
LEASE_CONDITION: Final = "id = %(id)s AND status = 'generating' AND lease_token = %(token)s"
"""The condition of ``PostgresJobStore.finish``'s UPDATE, as written there."""
CONDITIONS: Final = {
    "real": LEASE_CONDITION,
    "tokenless": "id = %(id)s AND status = 'generating'",
    "unguarded": "id = %(id)s",
}

log = logging.getLogger("reelforge.stalling_worker")

End = Callable[[Worker, Any, Any, Outcome], None]
"""``Worker._end(run, beat, outcome)``; ``run.lease`` is the attempt's lease."""
UpdateLeased = Callable[[PostgresJobStore, PgConnection, str, Lease, Mapping[str, Any]], Any]


def pausing(end: End) -> End:
    """``Worker._end`` stopping the process before it records a completion, for a marked
    job's early attempts."""

    def paused_end(worker: Worker, run: Any, beat: Any, outcome: Outcome) -> None:
        lease: Lease = run.lease
        marked = PAUSE in lease.job.request.prompt and lease.job.attempts <= PAUSED_ATTEMPTS
        if marked and isinstance(outcome, Completed):
            log.info(
                "pausing before recording job %s, attempt %d", lease.job.id, lease.job.attempts
            )
            # Sent to this thread, not the process: a process-wide SIGSTOP is taken by the
            # main thread, and this one runs on until the group stop reaches it, long enough
            # to begin recording the job and hold its row locked while stopped.
            signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)
            log.info("resumed; recording job %s", lease.job.id)
        end(worker, run, beat, outcome)

    return paused_end


def loosened(update_leased: UpdateLeased, condition: str) -> UpdateLeased:
    """``PostgresJobStore._update_leased`` with a completion's condition replaced."""

    def loose_update(
        store: PostgresJobStore,
        conn: PgConnection,
        query: str,
        lease: Lease,
        params: Mapping[str, Any],
    ) -> Any:
        if params.get("status") == "completed":
            query = query.replace(LEASE_CONDITION, condition)
        return update_leased(store, conn, query, lease, params)

    return loose_update


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "real"
    if mode not in CONDITIONS:
        sys.exit(f"usage: python -m tests.scale.stalling_worker {'|'.join(CONDITIONS)}")
    if LEASE_CONDITION not in inspect.getsource(PostgresJobStore.finish):
        sys.exit("PostgresJobStore.finish's SQL changed: this patch would prove nothing")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Worker, "_end", pausing(Worker._end))
        patch.setattr(
            PostgresJobStore,
            "_update_leased",
            loosened(PostgresJobStore._update_leased, CONDITIONS[mode]),
        )
        log.info("complete's condition: %s", CONDITIONS[mode])
        run_worker(Settings())


if __name__ == "__main__":
    main()
