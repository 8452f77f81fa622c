"""Bearer keys on a live API: refusals are 401 JSON, a key sees only its own generations,
revoked keys stop working, and no plaintext key ever reaches the data directory."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from reelforge.api.auth import KEY_CACHE_SECONDS, hash_key, new_key, register
from reelforge.cli import app
from tests.service import LEGACY, TEST_KEY, UNIFIED, Api, running_api, service_settings

BODY = {"model": "minimax/hailuo-02", "prompt": "A lighthouse at dusk"}


def call(
    api: Api,
    method: str,
    route: str,
    authorization: str | None,
    *,
    json: object = None,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    """One request with exactly this Authorization header (or none)."""
    headers = {} if authorization is None else {"Authorization": authorization}
    with httpx.Client(base_url=api.base_url, headers=headers, timeout=30) as client:
        return client.request(method, route, json=json, params=params)


def create(api: Api, key: str, route: str = LEGACY) -> str:
    response = call(api, "POST", route, f"Bearer {key}", json=BODY)
    assert response.status_code == 200, response.text
    answer = response.json()
    generation_id: str = answer["generation_id"] if route == LEGACY else answer["id"]
    return generation_id


def fetch(api: Api, key: str, generation_id: str, route: str = LEGACY) -> httpx.Response:
    return call(api, "GET", route, f"Bearer {key}", params={"generation_id": generation_id})


every_route = pytest.mark.parametrize(
    ("method", "route"),
    [("POST", LEGACY), ("GET", LEGACY), ("POST", UNIFIED), ("GET", UNIFIED)],
    ids=["legacy-create", "legacy-fetch", "unified-create", "unified-fetch"],
)


@pytest.fixture(scope="module")
def refusing_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One API for the refusal tests (none of them may create a job)."""
    with running_api(service_settings(tmp_path_factory.mktemp("auth"))) as live:
        yield live


@every_route
@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (None, "missing Authorization header; send 'Authorization: Bearer <key>'"),
        ("", "missing Authorization header; send 'Authorization: Bearer <key>'"),
        (f"Basic {TEST_KEY}", "the Authorization header must be 'Bearer <key>'"),
        (TEST_KEY, "the Authorization header must be 'Bearer <key>'"),
        ("Bearer", "the Authorization header must be 'Bearer <key>'"),
        ("Bearer rf_not-a-key-anybody-made", "unknown or revoked API key"),
        (f"Bearer {TEST_KEY}x", "unknown or revoked API key"),
    ],
    ids=["none", "empty", "basic", "no-scheme", "no-key", "unknown-key", "longer-key"],
)
def test_a_call_without_a_valid_key_is_401_json(
    refusing_api: Api,
    method: str,
    route: str,
    authorization: str | None,
    message: str,
) -> None:
    if method == "POST":
        response = call(refusing_api, method, route, authorization, json=BODY)
    else:
        response = call(refusing_api, method, route, authorization, params={"generation_id": "0"})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": {"name": "Unauthorized", "message": message}}
    assert sum(refusing_api.store.counts().values()) == 0


def test_the_scheme_is_case_insensitive(api: Api) -> None:
    response = call(api, "POST", LEGACY, f"bearer {TEST_KEY}", json=BODY)
    assert response.status_code == 200


@pytest.mark.parametrize("route", [LEGACY, UNIFIED])
def test_another_key_sees_a_generation_as_missing(api: Api, route: str) -> None:
    key_b = new_key()
    register(api.store, key_b, name="tenant B")
    mine = create(api, TEST_KEY)
    theirs = create(api, key_b, route)
    assert fetch(api, key_b, theirs, route).status_code == 200
    assert fetch(api, TEST_KEY, mine, route).status_code == 200

    hidden = fetch(api, key_b, mine, route)
    missing_id = "f" * 32
    missing = fetch(api, key_b, missing_id, route)
    assert (hidden.status_code, missing.status_code) == (404, 404)
    assert hidden.json() == json.loads(missing.text.replace(missing_id, mine))
    assert fetch(api, TEST_KEY, theirs, route).status_code == 404


def test_a_revoked_key_is_refused_within_the_cache_window(api: Api) -> None:
    key_b = new_key()
    record = register(api.store, key_b, name="tenant B")
    generation_id = create(api, key_b)  # the API process now caches key B
    assert api.store.revoke_key(record.id)
    revoked = time.monotonic()
    while fetch(api, key_b, generation_id).status_code == 200:
        assert time.monotonic() - revoked < KEY_CACHE_SECONDS + 1, "still accepted"
        time.sleep(0.05)
    for response in (
        fetch(api, key_b, generation_id),
        call(api, "POST", UNIFIED, f"Bearer {key_b}", json=BODY),
    ):
        assert response.status_code == 401
        assert response.json()["error"]["message"] == "unknown or revoked API key"
    assert fetch(api, TEST_KEY, create(api, TEST_KEY)).status_code == 200


def test_keys_are_stored_only_as_hashes(api: Api) -> None:
    key_b = new_key()
    register(api.store, key_b, name="tenant B")
    for key in (TEST_KEY, key_b):
        assert fetch(api, key, create(api, key)).status_code == 200
    database = api.settings.database_path
    wal = database.with_name(database.name + "-wal")
    assert wal.is_file()  # the API's connection is open: its commits sit in the WAL
    written = database.read_bytes() + wal.read_bytes()
    everything = b"".join(p.read_bytes() for p in api.settings.data_dir.rglob("*") if p.is_file())
    for key in (TEST_KEY, key_b):
        assert key.encode() not in everything
        assert hash_key(key).encode() in written


def keys_command(data_dir: Path, *args: str) -> tuple[str, str]:
    """``reelforge keys ...`` on ``data_dir``: its stdout and stderr (it must succeed)."""
    result = CliRunner().invoke(app, ["keys", *args], env={"REELFORGE_DATA_DIR": str(data_dir)})
    assert result.exit_code == 0, result.output
    return result.stdout, result.stderr


def test_keys_made_listed_and_revoked_with_the_cli(tmp_path: Path) -> None:
    stdout, stderr = keys_command(tmp_path, "create", "--name", "ci runner")
    key = stdout.strip()
    assert key.startswith("rf_")
    assert len(key) == 46
    assert "(ci runner); it is shown only now" in stderr

    listing, _ = keys_command(tmp_path, "list")
    assert key[:8] in listing
    assert "ci runner" in listing
    assert key not in listing

    with running_api(service_settings(tmp_path)) as api:
        generation_id = create(api, key, UNIFIED)
        assert fetch(api, key, generation_id).json()["status"] == "queued"
        assert fetch(api, TEST_KEY, generation_id).status_code == 404

        revoked, _ = keys_command(tmp_path, "revoke", key[:8])
        assert revoked.strip() == f"revoked {key[:8]}"
        assert api.store.key_for_hash(hash_key(key)) is None
        deadline = time.monotonic() + KEY_CACHE_SECONDS + 1  # the API's cache forgets it
        while fetch(api, key, generation_id).status_code == 200:
            assert time.monotonic() < deadline, "the revoked key is still accepted"
            time.sleep(0.05)
        assert fetch(api, key, generation_id).status_code == 401

    listing, _ = keys_command(tmp_path, "list")
    assert key[:8] in listing
    assert key not in listing


def test_revoking_an_unknown_key_fails(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["keys", "revoke", "rf_nope"], env={"REELFORGE_DATA_DIR": str(tmp_path)}
    )
    assert result.exit_code == 2
    assert "no active key 'rf_nope'" in result.stderr
