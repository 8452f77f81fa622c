"""What only the PostgreSQL store does: notifications, row locks, pooled connections, the
database's clock and versioned migrations. The shared behaviour is in
``test_store_contract.py`` and ``test_events.py``.

Each test has a schema of its own and the store's NOTIFY channels are per schema, so other
tests running at the same time on the same database cannot wake (or fail to wake) a listener
here."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest

from reelforge.contract import Status
from reelforge.jobs import migrate
from reelforge.jobs.migrate import Migration, migrations, upgrade
from reelforge.jobs.postgres import PostgresJobStore
from reelforge.request import JobRequest
from tests.jobs.contract import REQUEST, FakeClock
from tests.postgres import throwaway_schema, with_options
from tests.scale.faults import upstream_of, via
from tests.scale.proxy import Proxy

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], what: str, timeout: float = 5.0) -> T:
    """Poll ``check`` every 10 ms until it returns something; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found is not None:
            return found
        time.sleep(0.01)
    raise AssertionError(f"no {what} within {timeout} s")


def sql_value(url: str, query: str, params: tuple[Any, ...] = ()) -> Any:
    """The first column of the first row of ``query``, or None if there is no row."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query.encode(), params).fetchone()
    return None if row is None else row[0]


@pytest.fixture
def app_url(pg_url: str) -> str:
    """``pg_url`` with an application name of its own, to find this test's connections."""
    return with_options(pg_url, application_name=f"rf_test_{secrets.token_hex(4)}")


def application_name(url: str) -> str:
    return str(psycopg.conninfo.conninfo_to_dict(url)["application_name"])


def listener_pid(url: str) -> int | None:
    """The backend of the store's listener once its ``LISTEN`` has run, else None."""
    pid = sql_value(
        url,
        """
        SELECT pid FROM pg_stat_activity
        WHERE application_name = %s AND query LIKE 'LISTEN%%' AND state = 'idle'
        """,
        (application_name(url),),
    )
    return None if pid is None else int(pid)


@pytest.fixture
def store(app_url: str) -> Iterator[PostgresJobStore]:
    opened = PostgresJobStore(app_url)
    yield opened
    opened.close()


def create(store: PostgresJobStore) -> str:
    return store.create(owner="key-a", model="preview", request=REQUEST, max_attempts=3).id


# --- notifications ------------------------------------------------------------------------


def test_a_create_in_another_store_wakes_the_listener(
    app_url: str, store: PostgresJobStore
) -> None:
    """Nothing here polls, so each wake is the notification (its latency, under 100 ms at
    p99, is measured by ``bench/dispatch.py``, not timed here)."""
    woken = threading.Event()
    store.on_new_work(woken.set)
    wait_for(lambda: listener_pid(app_url), "LISTEN")
    other = PostgresJobStore(app_url)
    try:
        assert woken.wait(5)  # once as LISTEN starts, for what was created unheard
        woken.clear()
        assert not woken.wait(0.3)
        for _ in range(3):
            woken.clear()
            create(other)
            assert woken.wait(5)
    finally:
        other.close()


def test_the_listener_reconnects_after_its_connection_is_killed(
    app_url: str, store: PostgresJobStore
) -> None:
    woken = threading.Event()
    store.on_new_work(woken.set)
    killed = wait_for(lambda: listener_pid(app_url), "LISTEN")
    assert sql_value(app_url, "SELECT pg_terminate_backend(%s)", (killed,))
    assert woken.wait(5), "no call after reconnecting (notifications may have been missed)"
    wait_for(lambda: (pid := listener_pid(app_url)) != killed and pid, "new LISTEN")
    woken.clear()
    create(store)
    assert woken.wait(5)  # nothing polls: only the new LISTEN's notification wakes it


def test_every_callback_is_called_even_if_one_raises(app_url: str, store: PostgresJobStore) -> None:
    def broken() -> None:
        raise RuntimeError("callback bug")

    calls: list[str] = []
    store.on_new_work(broken)
    store.on_new_work(lambda: calls.append("a"))
    wait_for(lambda: listener_pid(app_url), "LISTEN")
    create(store)
    create(store)
    wait_for(lambda: len(calls) == 3 or None, "a call on LISTEN, then one per create")


def test_close_stops_the_listener(app_url: str) -> None:
    opened = PostgresJobStore(app_url)
    opened.on_new_work(lambda: None)
    wait_for(lambda: listener_pid(app_url), "LISTEN")
    opened.close()
    assert not any(thread.name == "reelforge-listen" for thread in threading.enumerate())
    with pytest.raises(RuntimeError, match="closed"):
        opened.on_new_work(lambda: None)


def test_on_event_wakes_on_an_appended_event(app_url: str, store: PostgresJobStore) -> None:
    woken = threading.Event()
    store.on_event(woken.set)
    wait_for(lambda: listener_pid(app_url), "LISTEN")
    assert woken.wait(5)  # once as LISTEN starts
    job_id = create(store)
    woken.clear()
    lease = store.claim(worker_id="w1", lease_seconds=30)
    assert lease is not None
    assert woken.wait(5)
    woken.clear()
    assert store.complete(lease, video_key="v.mp4", credits_used=1, meta={})
    assert woken.wait(5)
    assert len(store.events_after(0, job_id=job_id)) == 3


def test_stores_on_another_schema_do_not_wake_the_listener(
    app_url: str, store: PostgresJobStore
) -> None:
    woken = threading.Event()
    store.on_new_work(woken.set)
    store.on_event(woken.set)
    wait_for(lambda: listener_pid(app_url), "LISTEN")
    assert woken.wait(5)
    woken.clear()
    with throwaway_schema() as elsewhere:
        other = PostgresJobStore(elsewhere)
        try:
            create(other)
        finally:
            other.close()
    assert not woken.wait(0.5)
    create(store)
    assert woken.wait(5)


# --- the database's clock -----------------------------------------------------------------


def test_times_are_the_databases_without_an_injected_clock(pg_url: str) -> None:
    opened = PostgresJobStore(pg_url)
    try:
        job_id = create(opened)
        lease = opened.claim(worker_id="w1", lease_seconds=30)
        assert lease is not None
        db_now = float(sql_value(pg_url, "SELECT extract(epoch FROM now())"))
        job = opened.get(job_id)
        assert job is not None
        assert job.lease_expires_at is not None
        assert abs(job.lease_expires_at - (db_now + 30)) < 5
        assert abs(job.created_at - db_now) < 5
        assert opened.events_after(0)[-1].created_at == job.updated_at
        opened.report_worker("w1", models=["preview"])
        assert opened.ready_models(within=5) == {"preview"}
    finally:
        opened.close()


def test_an_injected_clock_is_used_instead(pg_url: str) -> None:
    clock = FakeClock(1000.0)
    opened = PostgresJobStore(pg_url, clock=clock)
    try:
        job = opened.get(create(opened))
        assert job is not None
        assert job.created_at == 1000.0
    finally:
        opened.close()


# --- row locks and connections ------------------------------------------------------------


@pytest.mark.timeout(20)
def test_claim_skips_a_job_another_transaction_holds(app_url: str, store: PostgresJobStore) -> None:
    held, free = create(store), create(store)
    with psycopg.connect(app_url) as conn:
        conn.execute("SELECT id FROM jobs WHERE id = %s FOR UPDATE", (held,))
        lease = store.claim(worker_id="w1", lease_seconds=30)
        assert lease is not None
        assert lease.job_id == free
        assert store.claim(worker_id="w1", lease_seconds=30) is None
    lease = store.claim(worker_id="w1", lease_seconds=30)
    assert lease is not None
    assert lease.job_id == held


@pytest.mark.timeout(20)
def test_the_expired_lease_pass_skips_a_job_another_transaction_holds(app_url: str) -> None:
    clock = FakeClock()
    opened = PostgresJobStore(app_url, clock=clock)
    try:
        job_id = create(opened)
        opened.claim(worker_id="w1", lease_seconds=10)
        clock.advance(11)
        with psycopg.connect(app_url) as conn:
            conn.execute("SELECT id FROM jobs WHERE id = %s FOR UPDATE", (job_id,))
            assert opened.settle_expired() == 0
        assert opened.settle_expired() == 1
    finally:
        opened.close()


def test_a_cut_pool_connection_is_replaced(app_url: str) -> None:
    opened = PostgresJobStore(app_url, min_size=1, max_size=1)
    try:
        create(opened)
        killed = sql_value(
            app_url,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            (application_name(app_url),),
        )
        assert killed == 1
        assert opened.counts()[Status.QUEUED] == 1
    finally:
        opened.close()


def test_create_refuses_a_request_jsonb_cannot_store(store: PostgresJobStore) -> None:
    with pytest.raises(ValueError, match="jsonb"):
        store.create(owner="key-a", model="preview", request=JobRequest("\x00"), max_attempts=1)
    assert store.counts()[Status.QUEUED] == 0


def test_store_refuses_use_after_fork(monkeypatch: pytest.MonkeyPatch, pg_url: str) -> None:
    opened = PostgresJobStore(pg_url)
    try:
        with monkeypatch.context() as patch:
            patch.setattr("os.getpid", lambda: -1)
            with pytest.raises(RuntimeError, match="another process"):
                opened.counts()
    finally:
        opened.close()


# --- migrations ---------------------------------------------------------------------------


def applied(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return migrate.applied_versions(conn)


SHIPPED = migrate.latest_version()
ALL = list(range(1, SHIPPED + 1))
NEXT = SHIPPED + 1


def add_migration(monkeypatch: pytest.MonkeyPatch, sql: str) -> None:
    """Make the code know one more migration, version ``NEXT``."""
    known = [*migrations("postgres"), Migration(NEXT, f"{NEXT:04d}_test.sql", sql)]
    monkeypatch.setattr(migrate, "migrations", lambda dialect: known)


def test_the_shipped_migrations_are_numbered_files() -> None:
    assert [(m.version, m.name) for m in migrations("postgres")] == [
        (1, "0001_initial.sql"),
        (2, "0002_retention.sql"),
        (3, "0003_cancel.sql"),
        (4, "0004_workers.sql"),
        (5, "0005_events.sql"),
        (6, "0006_deployment.sql"),
        (7, "0007_deleted.sql"),
        (8, "0008_webhooks.sql"),
        (9, "0009_admission.sql"),
        (10, "0010_fair.sql"),
    ]
    assert migrate.latest_version() == 10


def test_misnumbered_migration_files_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "postgres").mkdir()
    for name in ("0001_first.sql", "0003_third.sql", "README.md"):
        (tmp_path / "postgres" / name).write_text("SELECT 1")
    monkeypatch.setattr(migrate, "MIGRATIONS", tmp_path)
    with pytest.raises(RuntimeError, match=r"numbered 1, 2, 3, \.\.\.; found \[1, 3\]"):
        migrations("postgres")


def test_store_refuses_a_database_without_schema(pg_empty_url: str) -> None:
    with pytest.raises(RuntimeError, match="no reelforge schema; run `reelforge db upgrade`"):
        PostgresJobStore(pg_empty_url)
    assert upgrade(pg_empty_url) == ALL
    PostgresJobStore(pg_empty_url).close()


def test_upgrade_twice_is_a_no_op(pg_empty_url: str) -> None:
    assert upgrade(pg_empty_url) == ALL
    assert upgrade(pg_empty_url) == []
    assert applied(pg_empty_url) == ALL


def test_store_refuses_an_older_schema_until_upgraded(
    monkeypatch: pytest.MonkeyPatch, pg_url: str
) -> None:
    add_migration(monkeypatch, "CREATE TABLE later (id integer)")
    with pytest.raises(
        RuntimeError,
        match=rf"schema version {SHIPPED}, this reelforge needs {NEXT}; run `reelforge db upgrade`",
    ):
        PostgresJobStore(pg_url)
    assert upgrade(pg_url) == [NEXT]
    PostgresJobStore(pg_url).close()


def test_store_and_upgrade_refuse_a_newer_schema(pg_url: str) -> None:
    sql_value(pg_url, f"INSERT INTO schema_migrations (version) VALUES ({NEXT}) RETURNING version")
    with pytest.raises(
        RuntimeError, match=rf"version {NEXT}, newer .* knows up to version {SHIPPED}"
    ):
        PostgresJobStore(pg_url)
    with pytest.raises(RuntimeError, match=f"knows up to version {SHIPPED}"):
        upgrade(pg_url)


def test_store_refuses_unknown_schema_versions(
    monkeypatch: pytest.MonkeyPatch, pg_url: str
) -> None:
    add_migration(monkeypatch, "CREATE TABLE later (id integer)")
    upgrade(pg_url)
    sql_value(pg_url, "DELETE FROM schema_migrations WHERE version = 1 RETURNING version")
    with pytest.raises(RuntimeError, match=r"unknown schema versions \[2, "):
        PostgresJobStore(pg_url)


def test_a_failed_migration_leaves_the_previous_version(
    monkeypatch: pytest.MonkeyPatch, pg_url: str
) -> None:
    add_migration(monkeypatch, "CREATE TABLE later (id integer); SELECT 1 / 0")
    with pytest.raises(psycopg.errors.DivisionByZero):
        upgrade(pg_url)
    assert applied(pg_url) == ALL
    assert sql_value(pg_url, "SELECT to_regclass('later')") is None


def test_concurrent_upgrades_apply_each_version_once(
    monkeypatch: pytest.MonkeyPatch, pg_empty_url: str
) -> None:
    add_migration(monkeypatch, "CREATE TABLE later (id integer)")
    start = threading.Barrier(4)
    results: list[list[int]] = []

    def run() -> None:
        start.wait()
        results.append(upgrade(pg_empty_url))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4, "an upgrade raised"
    assert sorted(version for versions in results for version in versions) == [*ALL, NEXT]
    assert applied(pg_empty_url) == [*ALL, NEXT]


def test_upgrade_fills_job_inputs_from_old_requests(
    monkeypatch: pytest.MonkeyPatch, pg_empty_url: str
) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(migrate, "migrations", lambda dialect: migrations("postgres")[:4])
        upgrade(pg_empty_url)
    old = (
        '{"prompt": "a fox", "duration": 6, "resolution": "768P",'
        ' "first_frame": {"key": "inputs/a", "field": "first_frame_image"},'
        ' "last_frame": {"key": "inputs/b", "field": "last_frame_image"}}'
    )
    sql_value(
        pg_empty_url,
        """
        INSERT INTO jobs (id, owner, model, request, status, progress, attempts, max_attempts,
                          meta, created_at, updated_at)
        VALUES ('old', 'key-a', 'preview', %s, 'queued', 0, 0, 1, '{}', 1, 1) RETURNING id
        """,
        (old,),
    )
    assert upgrade(pg_empty_url) == list(range(5, SHIPPED + 1))
    opened = PostgresJobStore(pg_empty_url)
    try:
        keys = {"inputs/a", "inputs/b", "inputs/c"}
        assert opened.inputs_in_use(keys, excluding=[]) == {"inputs/a", "inputs/b"}
        job = opened.get("old")
        assert job is not None
        assert (job.request.duration_s, job.dialect) == (6, "hailuo")
    finally:
        opened.close()


def test_a_store_starting_during_a_blip_tries_again(pg_url: str) -> None:
    """A worker restarted while the network drops connections starts once they get through
    (its first two connections are closed as soon as they are made)."""
    with Proxy(upstream_of(pg_url), drop_first=2) as proxy:
        opened = PostgresJobStore(via(proxy, pg_url))
        try:
            assert opened.counts()[Status.QUEUED] == 0
        finally:
            opened.close()
        assert proxy.drop_first == 0
