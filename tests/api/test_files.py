"""Signed video links on a live service: served whole or by Range, refused when any part of
the link is changed (403) or when it is old (410), and never a file outside storage."""

from __future__ import annotations

import http.client
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from reelforge.api.auth import register
from reelforge.storage.local import LocalStorage, load_or_create_secret
from tests.service import LEGACY, UNIFIED, Api, running_api, running_workers, service_settings


@dataclass(frozen=True)
class Finished:
    """The module's service and two completed generations of it."""

    api: Api
    ids: tuple[str, str]
    urls: tuple[str, str]

    def key(self, index: int = 0) -> str:
        """The storage key of a generation's video."""
        job = self.api.store.get(self.ids[index])
        assert job is not None
        assert job.video_key is not None
        return job.video_key

    def video(self, index: int = 0) -> bytes:
        return (self.api.settings.data_dir / self.key(index)).read_bytes()

    def storage(self, clock: float) -> LocalStorage:
        """A second storage on the service's data dir and secret, its clock at ``clock``."""
        data_dir = self.api.settings.data_dir
        return LocalStorage(
            data_dir,
            secret=load_or_create_secret(data_dir / "url-secret"),
            url_ttl_seconds=self.api.settings.url_ttl_seconds,
            clock=lambda: clock,
        )


@pytest.fixture(scope="module")
def done(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Finished]:
    settings = service_settings(tmp_path_factory.mktemp("files"))
    with running_api(settings) as api:
        with running_workers(settings):
            ids = [
                api.create({"model": "preview", "prompt": f"Clip {n} [Pan left]"}).json()[
                    "generation_id"
                ]
                for n in (1, 2)
            ]
            answers = [api.wait(generation_id) for generation_id in ids]
        assert [a["status"] for a in answers] == ["completed", "completed"], answers
        urls = [a["video"]["url"] for a in answers]
        yield Finished(api, (ids[0], ids[1]), (urls[0], urls[1]))


def get(done: Finished, url: str | httpx.URL, **headers: str) -> httpx.Response:
    return done.api.client.get(url, headers=headers)


def test_a_link_is_signed_and_expires(done: Finished) -> None:
    url = httpx.URL(done.urls[0])
    assert url.path == f"/files/{done.key(0)}"
    assert done.key(0).startswith(f"videos/{done.ids[0]}")
    assert set(url.params) == {"expires", "signature"}
    assert 0 < int(url.params["expires"]) - time.time() <= done.api.settings.url_ttl_seconds


def test_the_video_is_served_inline_as_mp4(done: Finished) -> None:
    response = get(done, done.urls[0])
    assert response.status_code == 200
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["content-disposition"].startswith("inline")
    assert response.headers["accept-ranges"] == "bytes"
    assert response.content == done.video()
    assert response.content[4:8] == b"ftyp"


def test_a_range_from_the_start_is_206(done: Finished) -> None:
    response = get(done, done.urls[0], Range="bytes=0-99")
    size = len(done.video())
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes 0-99/{size}"
    assert response.content == done.video()[:100]


def test_a_range_in_the_middle_is_206(done: Finished) -> None:
    video = done.video()
    start, end = len(video) // 3, len(video) // 3 + 4095
    response = get(done, done.urls[0], Range=f"bytes={start}-{end}")
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes {start}-{end}/{len(video)}"
    assert response.content == video[start : end + 1]


def test_a_suffix_range_is_the_end_of_the_file(done: Finished) -> None:
    response = get(done, done.urls[0], Range="bytes=-500")
    assert response.status_code == 206
    assert response.content == done.video()[-500:]


def test_a_range_past_the_end_is_416(done: Finished) -> None:
    size = len(done.video())
    response = get(done, done.urls[0], Range=f"bytes={size + 10}-{size + 20}")
    assert response.status_code == 416


@pytest.mark.parametrize(
    "value", ["items=0-1", "bytes=100-50", "bytes=0-1,9-3", "bytes=abc", "bytes=", "bytes 0-1"]
)
def test_an_unknown_unit_or_invalid_range_is_ignored(done: Finished, value: str) -> None:
    """RFC 9110, 14.2: the whole file, as if no Range had been sent (not 400)."""
    response = get(done, done.urls[0], Range=value)
    assert response.status_code == 200, value
    assert response.content == done.video()
    assert "content-range" not in response.headers


def test_several_valid_ranges_are_206(done: Finished) -> None:
    response = get(done, done.urls[0], Range="bytes=0-9, 20-29")
    assert response.status_code == 206
    assert response.headers["content-type"].startswith("multipart/byteranges")


def test_head_answers_the_headers_without_the_body(done: Finished) -> None:
    response = done.api.client.head(done.urls[0])
    assert response.status_code == 200
    assert response.headers["content-type"] == "video/mp4"
    assert int(response.headers["content-length"]) == len(done.video())
    assert response.content == b""


def test_a_changed_signature_is_403(done: Finished) -> None:
    url = httpx.URL(done.urls[0])
    signature = url.params["signature"]
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    for changed in (flipped, signature.upper(), signature[:-1], ""):
        response = get(done, url.copy_set_param("signature", changed))
        assert response.status_code == 403, changed
        assert response.json()["error"]["name"] == "Forbidden"


@pytest.mark.parametrize(
    "signature", ["é" * 64, "0" * 63 + "\u00e9", "\U0001f600"], ids=["accents", "last", "emoji"]
)
def test_a_non_ascii_signature_is_403(done: Finished, signature: str) -> None:
    url = httpx.URL(done.urls[0]).copy_set_param("signature", signature)
    response = get(done, url)
    assert response.status_code == 403
    assert response.json()["error"]["name"] == "Forbidden"
    query = httpx.URL(done.urls[0]).query.decode().split("&signature=")[0]
    for raw in ("%FF", "%C3%A9", "%ED%A0%80"):  # not UTF-8, é, a lone surrogate's bytes
        status, _ = raw_get(
            done,
            f"{httpx.URL(done.urls[0]).raw_path.decode().split('?')[0]}?{query}&signature={raw}",
        )
        assert status == 403, raw


def test_a_changed_expiry_is_403(done: Finished) -> None:
    url = httpx.URL(done.urls[0])
    expires = int(url.params["expires"])
    for changed in (expires + 1, expires + 86400, expires - 1):
        response = get(done, url.copy_set_param("expires", str(changed)))
        assert response.status_code == 403
        assert response.json()["error"]["name"] == "Forbidden"


def test_another_files_name_with_this_signature_is_403(done: Finished) -> None:
    other = done.urls[0].replace(f"/files/{done.key(0)}?", f"/files/{done.key(1)}?")
    assert other != done.urls[0]
    response = get(done, other)
    assert response.status_code == 403
    assert get(done, done.urls[1]).content == done.video(1)


def test_a_link_whose_expiry_has_passed_is_410(done: Finished) -> None:
    two_lifetimes_ago = done.storage(clock=time.time() - 2 * done.api.settings.url_ttl_seconds)
    old = two_lifetimes_ago.video_url(done.key(0), base_url=done.api.base_url)
    response = get(done, old)
    assert response.status_code == 410
    assert response.json()["error"]["name"] == "Gone"


def test_a_fresh_link_is_given_on_every_poll(done: Finished) -> None:
    for route in (LEGACY, UNIFIED):
        url = done.api.get(done.ids[0], route=route)["video"]["url"]
        assert get(done, url).status_code == 200


def test_a_non_numeric_expiry_is_refused(done: Finished) -> None:
    response = get(done, httpx.URL(done.urls[0]).copy_set_param("expires", "soon"))
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("expires: ")


def raw_get(done: Finished, target: str) -> tuple[int, bytes]:
    """``GET target`` sent as written: no client-side normalisation of ``..``."""
    connection = http.client.HTTPConnection("127.0.0.1", done.api.settings.port, timeout=10)
    try:
        connection.request("GET", target)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize(
    "key",
    [
        "../reelforge.sqlite3",
        "videos/../../reelforge.sqlite3",
        "/etc/passwd",
        "videos/..",
        "inputs/../reelforge.sqlite3",
    ],
)
@pytest.mark.parametrize("spelling", ["plain", "encoded"])
def test_a_path_outside_storage_is_never_served(done: Finished, key: str, spelling: str) -> None:
    """Even with a valid signature for the key (made with the service's own secret)."""
    signed = httpx.URL(done.storage(clock=time.time()).video_url(key, base_url="http://x"))
    query = signed.query.decode()
    path = f"/files/{key}" if spelling == "plain" else f"/files/{quote(key, safe='')}"
    database = done.api.settings.database_path.read_bytes()[:100]
    for target in (f"{path}?{query}", path, f"{path}?{httpx.URL(done.urls[0]).query.decode()}"):
        status, body = raw_get(done, target)
        assert status in (400, 403, 404), (target, status)
        assert database not in body
        assert b"SQLite format" not in body


def test_healthz_without_a_key_says_only_ok(done: Finished) -> None:
    response = httpx.get(f"{done.api.base_url}/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_healthz_with_a_key_counts_only_that_keys_jobs(done: Finished) -> None:
    mine = get(done, "/healthz").json()
    assert mine == {
        "status": "ok",
        "jobs": {"queued": 0, "generating": 0, "completed": 2, "error": 0},
    }
    other_key = "rf_another-tenant-key-0123456789abc"
    register(done.api.store, other_key, name="another tenant")
    theirs = httpx.get(
        f"{done.api.base_url}/healthz", headers={"Authorization": f"Bearer {other_key}"}
    )
    assert theirs.json()["jobs"] == {"queued": 0, "generating": 0, "completed": 0, "error": 0}
    bad = httpx.get(f"{done.api.base_url}/healthz", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401


def test_the_openapi_document_lists_both_routes(done: Finished) -> None:
    response = httpx.get(f"{done.api.base_url}/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for route in (LEGACY, UNIFIED):
        assert {"get", "post"} <= set(paths[route])
        poll = paths[route]["get"]
        assert [(p["name"], p["in"], p["required"]) for p in poll["parameters"]] == [
            ("generation_id", "query", False),
            ("after", "query", False),
            ("limit", "query", False),
        ]
        schema = poll["responses"]["200"]["content"]["application/json"]["schema"]
        assert {"$ref": "#/components/schemas/Generation"} in schema["anyOf"]
        assert {"$ref": "#/components/schemas/GenerationPage"} in schema["anyOf"]


def test_stale_scratch_files_are_swept_and_fresh_ones_kept(tmp_path: Path) -> None:
    now = [10_000.0]
    storage = LocalStorage(tmp_path, secret=b"s" * 32, url_ttl_seconds=60, clock=lambda: now[0])
    stale, fresh = storage.scratch / "old.mp4.part", storage.scratch / "new.mp4.part"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(stale, (now[0] - 7200, now[0] - 7200))
    os.utime(fresh, (now[0] - 60, now[0] - 60))
    assert storage.sweep_scratch(3600) == 1
    assert sorted(p.name for p in storage.scratch.iterdir()) == ["new.mp4.part"]
