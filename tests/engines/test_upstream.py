"""The gateway engine's parts that need no provider: its registry entry, how one HTTP call's
failures are sorted (through a real ``httpx`` client on a handler transport), the waiting
hints it honours, and which worker pool claims a hosted model."""

from __future__ import annotations

import os
from email.utils import formatdate
from pathlib import Path

import httpx
import pytest

from reelforge.engines.options import UpstreamOptions
from reelforge.engines.registry import load_registry
from reelforge.engines.upstream import UpstreamEngine
from reelforge.engines.upstream.minimax import MiniMax
from reelforge.engines.upstream.wire import Transient, call, wait_hint
from reelforge.errors import UpstreamRejected
from reelforge.jobs.sqlite import SQLiteJobStore
from reelforge.runtime import build_workers, has_upstream, open_storage
from reelforge.settings import Settings

HOSTED = """
[models.preview]
engine = "preview"
dtype = "float32"
device = "cpu"
[models.hosted]
engine = "upstream"
options = { provider = "openai", base_url = "https://api.example/v1/", \
api_key_env = "RF_TEST_UPSTREAM_KEY", model = "sora-2"%s }
"""


def registry_file(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "models.toml"
    path.write_text(HOSTED % extra)
    return path


def test_a_hosted_entry_needs_no_weights_and_keeps_its_options(tmp_path: Path) -> None:
    spec = load_registry(registry_file(tmp_path, ', fallback = "preview"'))["hosted"]
    options = spec.options_as(UpstreamOptions)
    assert (options.provider, options.base_url, options.model) == (
        "openai",
        "https://api.example/v1",
        "sora-2",
    )
    assert (options.poll_seconds, options.fallback) == (2.0, "preview")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (', fallback = "nowhere"', r"fallback: 'nowhere' is not another model here"),
        (', fallback = "hosted"', r"fallback: 'hosted' is not another model here"),
        (", poll_seconds = 0", r"options.poll_seconds: Input should be greater than 0"),
        (', provider_key = "x"', r"options.provider_key: unknown key"),
    ],
)
def test_a_bad_hosted_entry_stops_the_start(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_registry(registry_file(tmp_path, extra))


def test_a_missing_key_variable_is_named_at_load(tmp_path: Path) -> None:
    spec = load_registry(registry_file(tmp_path))["hosted"]
    os.environ.pop("RF_TEST_UPSTREAM_KEY", None)
    with pytest.raises(ValueError, match="RF_TEST_UPSTREAM_KEY is not set"):
        UpstreamEngine(spec).load()


def test_hosted_models_go_to_the_upstream_pool_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RF_TEST_UPSTREAM_KEY", "secret")
    settings = Settings(data_dir=tmp_path, models=registry_file(tmp_path), worker_concurrency=2)
    store = SQLiteJobStore(tmp_path / "jobs.db")
    try:
        local = build_workers(settings, store, open_storage(settings), prefix="t")
        pool = build_workers(settings, store, open_storage(settings), prefix="u", upstream=True)
    finally:
        store.close()
    assert [list(worker.engines) for worker in local] == [["preview"], ["preview"]]
    assert [list(worker.engines) for worker in pool] == [["hosted"]]  # one, many jobs at once
    assert has_upstream(settings)
    assert not has_upstream(Settings(data_dir=tmp_path))


def client_answering(status: int, body: object = None, **headers: str) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body, headers=headers)

    return httpx.Client(base_url="http://provider", transport=httpx.MockTransport(handler))


def test_429_and_5xx_are_transient_with_the_provider_hint() -> None:
    with pytest.raises(Transient) as busy:
        call(client_answering(429, {}, **{"Retry-After": "7"}), "GET", "/x")
    assert busy.value.after == 7.0
    with pytest.raises(Transient) as down:
        call(client_answering(503, {}), "GET", "/x")
    assert down.value.after is None


def test_a_4xx_is_a_refusal_with_the_provider_message() -> None:
    body = {"error": {"name": "InvalidRequest", "message": "prompt: too long"}}
    with pytest.raises(UpstreamRejected, match=r"HTTP 400\): prompt: too long"):
        call(client_answering(400, body), "POST", "/x")


def test_a_network_failure_is_transient() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client = httpx.Client(base_url="http://provider", transport=httpx.MockTransport(refuse))
    with pytest.raises(Transient, match="ConnectError"):
        call(client, "GET", "/x")


def test_minimax_business_codes_are_sorted() -> None:
    rate_limited = {"base_resp": {"status_code": 1002, "status_msg": "rate limit"}}
    with pytest.raises(Transient, match="rate limit"):
        MiniMax().poll(client_answering(200, rate_limited), "task")
    refused = {"base_resp": {"status_code": 2013, "status_msg": "invalid params: duration"}}
    with pytest.raises(UpstreamRejected, match="invalid params: duration"):
        MiniMax().poll(client_answering(200, refused), "task")


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"openai-poll-after-ms": "1500"}, 1.5),
        ({"openai-poll-after-ms": "1500", "Retry-After": "9"}, 1.5),
        ({"Retry-After": "9"}, 9.0),
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
)
def test_wait_hints(headers: dict[str, str], seconds: float | None) -> None:
    assert wait_hint(httpx.Response(200, headers=headers)) == seconds


def test_a_retry_after_date_is_seconds_from_now() -> None:
    import time

    hint = wait_hint(
        httpx.Response(429, headers={"Retry-After": formatdate(time.time() + 30, usegmt=True)})
    )
    assert hint is not None
    assert 28 <= hint <= 31


def test_the_readme_example_is_a_valid_entry(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## A gateway to hosted video APIs", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    preview = '[models.preview]\nengine = "preview"\ndtype = "float32"\ndevice = "cpu"\n'
    path = tmp_path / "models.toml"
    path.write_text(preview + example)
    options = load_registry(path)["hailuo-hosted"].options_as(UpstreamOptions)
    assert (options.provider, options.fallback) == ("aiml", "preview")
