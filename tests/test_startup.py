"""What a process checks before it serves: the configured key (long enough, not revoked), the
first key kept before it is stored, one storage for every process on a database, and files
readable by their owner only."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from reelforge.api.auth import hash_key
from reelforge.jobs.model import Store
from reelforge.jobs.postgres import PostgresJobStore
from reelforge.runtime import open_storage, open_store
from reelforge.settings import Settings
from reelforge.startup import StartRefused, check_storage, ensure_key
from tests.postgres import throwaway_schema
from tests.service import TEST_KEY


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


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


@pytest.fixture
def pg_url() -> Iterator[str]:
    with throwaway_schema() as url:
        yield url


def test_a_revoked_configured_key_stops_serve_in_one_line(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, api_key=TEST_KEY)
    store = open_store(settings)
    ensure_key(settings, store)
    assert store.revoke_key(TEST_KEY[:8])
    store.close()
    env = environment(REELFORGE_DATA_DIR=str(tmp_path), REELFORGE_API_KEY=TEST_KEY)
    done = reelforge("serve", "--workers", "0", "--port", "1", env=env)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "REELFORGE_API_KEY is a revoked key" in done.stderr


def test_a_short_configured_key_is_refused_naming_the_variable(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, api_key="rf_nineteen-chars-x")
    store = open_store(settings)
    with pytest.raises(StartRefused, match="REELFORGE_API_KEY is 19 characters long"):
        ensure_key(settings, store)
    assert store.list_keys() == []
    ensure_key(Settings(data_dir=tmp_path, api_key=TEST_KEY), store)  # 36: accepted
    store.close()


def test_the_first_start_on_postgres_keeps_the_key_it_stores(tmp_path: Path, pg_url: str) -> None:
    settings = Settings(data_dir=tmp_path / "not-yet" / "data", database_url=pg_url)
    store = PostgresJobStore(pg_url)
    try:
        key = ensure_key(settings, store)
        assert key is not None
        assert settings.local_key_path.read_text().strip() == key
        assert store.key_for_hash(hash_key(key)) is not None
        assert mode(settings.data_dir) == 0o700
        assert mode(settings.local_key_path) == 0o600
    finally:
        store.close()


def test_a_key_that_cannot_be_kept_is_never_stored(tmp_path: Path, pg_url: str) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    settings = Settings(data_dir=blocked / "data", database_url=pg_url)
    store = PostgresJobStore(pg_url)
    try:
        with pytest.raises(NotADirectoryError):
            ensure_key(settings, store)
        assert store.list_keys() == []
    finally:
        store.close()


def test_processes_on_one_database_must_share_storage(tmp_path: Path, pg_url: str) -> None:
    store: Store = PostgresJobStore(pg_url)
    here = Settings(data_dir=tmp_path / "here", database_url=pg_url)
    elsewhere = here.model_copy(update={"data_dir": tmp_path / "elsewhere"})
    bucket = here.model_copy(update={"s3_bucket": "videos", "s3_prefix": "rf/"})
    try:
        check_storage(here, store)
        check_storage(here, store)  # the same directory again: fine
        with pytest.raises(StartRefused, match=r"use S3 .* or one shared REELFORGE_DATA_DIR"):
            check_storage(elsewhere, store)
        with pytest.raises(StartRefused, match="another data directory, not in this process's S3"):
            check_storage(bucket, store)
    finally:
        store.close()


def test_a_worker_elsewhere_with_its_own_directory_refuses_to_start(
    tmp_path: Path, pg_url: str
) -> None:
    store = PostgresJobStore(pg_url)
    check_storage(Settings(data_dir=tmp_path / "api-host", database_url=pg_url), store)
    store.close()
    env = environment(REELFORGE_DATA_DIR=str(tmp_path / "gpu-host"), REELFORGE_DATABASE_URL=pg_url)
    done = reelforge("worker", env=env)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "processes sharing a database must share storage" in done.stderr
    assert not (tmp_path / "gpu-host" / "videos").exists()


def test_s3_deployments_agree_on_bucket_and_prefix(tmp_path: Path) -> None:
    one = Settings(data_dir=tmp_path / "one", s3_bucket="videos", s3_prefix="rf/")
    store = open_store(one)
    try:
        check_storage(one, store)
        check_storage(one.model_copy(update={"data_dir": tmp_path / "two"}), store)
        with pytest.raises(StartRefused, match=r"kept in S3 \(videos/rf/\)"):
            check_storage(one.model_copy(update={"s3_prefix": "other/"}), store)
    finally:
        store.close()


def test_the_data_directory_and_what_it_holds_are_the_owners_only(tmp_path: Path) -> None:
    previous = os.umask(0o022)  # the usual umask: 0755 directories, 0644 files
    try:
        settings = Settings(data_dir=tmp_path / "data")
        store = open_store(settings)
        ensure_key(settings, store)
        key = open_storage(settings).save_input(b"an image's bytes")
        database = settings.database_path
        assert mode(Path(f"{database}-wal")) == 0o600  # removed when the store closes
        store.close()
    finally:
        os.umask(previous)
    data = settings.data_dir
    assert mode(data) == 0o700
    for path in (database, Path(f"{database}.turn"), data / key):
        assert mode(path) == 0o600, path
    assert mode(data / "url-secret") == mode(data / "api-key") == 0o600
