"""The served API on a real socket: security headers on every answer, no ``Server`` header,
and connections that send nothing, or half a request, are closed within a bounded time."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.service import LEGACY, Api, running_api, service_settings

READ_TIMEOUT = 0.5
"""The fixture's ``read_timeout_seconds``."""
BOUND = READ_TIMEOUT + 1.0
"""The most a late connection may live past its deadline's start (timer slack included)."""


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    settings = service_settings(
        tmp_path_factory.mktemp("serving"), read_timeout_seconds=READ_TIMEOUT
    )
    with running_api(settings) as live:
        yield live


def connect(api: Api) -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", api.settings.port), timeout=5)
    connection.settimeout(BOUND + 2)
    return connection


def until_closed(connection: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and the seconds that took."""
    started = time.monotonic()
    received = b""
    with connection:
        while chunk := connection.recv(65536):
            received += chunk
    return received, time.monotonic() - started


# --- headers -----------------------------------------------------------------------------


def assert_security_headers(response: httpx.Response) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "server" not in response.headers
    assert len(response.headers.get_list("x-content-type-options")) == 1  # never twice


def test_every_kind_of_answer_has_the_security_headers(api: Api) -> None:
    created = api.create({"model": "preview", "prompt": "x"})
    generation_id = created.json()["generation_id"]
    answers = [
        created,
        api.client.get(LEGACY, params={"generation_id": generation_id}),  # the hot poll
        api.client.get(LEGACY, params={"generation_id": "missing"}),  # the hot poll's 404
        api.client.get(LEGACY),  # the hot poll's 400
        httpx.get(f"{api.base_url}{LEGACY}", params={"generation_id": "x"}),  # its 401
        api.create({"model": "preview", "prompt": "x", "durationn": 6}),  # a 400
        api.client.get("/nowhere"),  # a 404
        api.client.get("/healthz"),
        api.client.get("/openapi.json"),
        api.client.get("/v2/models"),
        api.client.get("/v1/models"),  # the OpenAI dialect
        api.client.get("/v1/videos/missing"),  # its 404
        api.client.get("/v1/query/video_generation"),  # MiniMax's refusal, at HTTP 200
        api.client.put("/healthz"),  # a 405
    ]
    for response in answers:
        assert_security_headers(response)
    assert "content-security-policy" not in answers[1].headers  # JSON needs none


def test_html_answers_have_a_strict_content_security_policy(api: Api) -> None:
    for path in ("/docs", "/redoc"):
        response = api.client.get(path)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert_security_headers(response)
        policy = response.headers["content-security-policy"]
        assert "default-src 'none'" in policy
        assert "script-src 'self';" in policy  # no inline script, no other origin
        assert "frame-ancestors 'none'" in policy


# --- timeouts ----------------------------------------------------------------------------


def test_a_connection_that_sends_nothing_is_closed(api: Api) -> None:
    received, seconds = until_closed(connect(api))
    assert seconds < BOUND
    assert received.startswith(b"HTTP/1.1 408 ")


def test_half_sent_headers_are_answered_408_and_closed(api: Api) -> None:
    connection = connect(api)
    connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    received, seconds = until_closed(connection)
    assert seconds < BOUND
    assert received.startswith(b"HTTP/1.1 408 ")
    assert b"x-content-type-options: nosniff" in received


def test_headers_trickled_byte_by_byte_are_cut_off(api: Api) -> None:
    """Each byte arrives well within the timeout; the headers as a whole do not."""
    connection = connect(api)
    started = time.monotonic()
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
    received = b"(reset)"
    with connection:
        try:
            for byte in request:
                connection.sendall(bytes([byte]))
                time.sleep(READ_TIMEOUT / 5)
                if time.monotonic() - started > BOUND:
                    break
            received, _ = until_closed(connection)
        except (BrokenPipeError, ConnectionResetError):
            pass
    assert time.monotonic() - started < BOUND + READ_TIMEOUT
    assert received.startswith(b"HTTP/1.1 408 ") or received == b"(reset)"


def test_a_body_that_stops_halfway_is_closed(api: Api) -> None:
    connection = connect(api)
    auth = api.client.headers["authorization"].encode()
    connection.sendall(
        b"POST "
        + LEGACY.encode()
        + b" HTTP/1.1\r\nHost: x\r\nAuthorization: "
        + auth
        + b'\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"model": '
    )
    _, seconds = until_closed(connection)
    assert seconds < BOUND
    assert api.client.get("/healthz").status_code == 200  # the service goes on


def test_an_idle_keep_alive_connection_is_closed(api: Api) -> None:
    connection = connect(api)
    connection.settimeout(10)
    connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    received, seconds = until_closed(connection)
    assert received.startswith(b"HTTP/1.1 200 ")
    assert seconds < 5 + 1.5  # uvicorn's keep-alive timeout


def test_a_slow_but_steady_client_is_served(api: Api) -> None:
    """Each part within the deadline: a request split over several sends is answered."""
    connection = connect(api)
    for part in (b"GET /healthz HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n"):
        connection.sendall(part)
        time.sleep(READ_TIMEOUT / 4)
    connection.settimeout(5)
    assert connection.recv(65536).startswith(b"HTTP/1.1 200 ")
    connection.close()


def test_a_fresh_app_answers_without_a_server_header(tmp_path: Path) -> None:
    with running_api(service_settings(tmp_path)) as live:
        assert "server" not in live.client.get("/healthz").headers
