"""``reelforge serve`` as an operator runs it, with 2 API processes, a worker and JSON logs:
every ``/metrics`` scrape, whichever process answers it, shows the counts of them all (the
webhook deliveries of the worker process too); the server's log has a JSON line per request
and per job transition; and no key, signature or secret of a full run (create with a key and
a webhook URL holding a token, a wrong key, poll, download a signed link, the webhooks'
signing secret) is in it.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.service import LEGACY, TEST_KEY, free_port

START_S = 60.0
URL_SECRET = "url-secret-for-the-log-test-7f3a9c"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"webhook-secret-of-the-log-test!!").decode()
RECEIVER_TOKEN = "receiver-token-in-the-webhook-url-91c2"
WRONG_KEY = "rf_wrong-key-never-to-be-logged-5b1e"
MODEL = "minimax/hailuo-02"


def counts(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def start(tmp_path: Path, port: int) -> tuple[subprocess.Popen[bytes], Path]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("REELFORGE_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        REELFORGE_DATA_DIR=str(tmp_path / "data"),
        REELFORGE_PORT=str(port),
        REELFORGE_API_KEY=TEST_KEY,
        REELFORGE_URL_SECRET=URL_SECRET,
        REELFORGE_LOG_FORMAT="json",
        REELFORGE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        REELFORGE_WEBHOOK_ALLOW_PRIVATE="true",
        REELFORGE_X264_PRESET="ultrafast",
        REELFORGE_POLL_SECONDS="0.05",
        REELFORGE_DRAIN_SECONDS="2",
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "reelforge", "serve", "--api-processes", "2"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    return process, log


def wait_ready(base_url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_S
    while True:
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"serve did not start:\n{log.read_text()}"
        try:
            if httpx.get(f"{base_url}/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)


class Receiver(http.server.BaseHTTPRequestHandler):
    """A webhook receiver on loopback: counts the deliveries, answers 204."""

    received: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        Receiver.received.append(self.rfile.read(int(self.headers["content-length"])))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


def full_run(client: httpx.Client, webhook: str) -> list[str]:
    """Two generations created, polled to their end and downloaded; the signatures seen."""
    signatures = []
    for n in range(2):
        body = {"model": MODEL, "prompt": f"a lighthouse {n}", "callback_url": webhook}
        created = client.post(LEGACY, json=body)
        generation = created.json()["generation_id"]
        deadline = time.monotonic() + 60
        while (answer := client.get(LEGACY, params={"generation_id": generation}).json())[
            "status"
        ] not in ("completed", "error"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert answer["status"] == "completed", answer
        url = answer["video"]["url"]
        assert client.get(url).status_code == 200
        query = parse_qs(urlsplit(url).query)
        signatures += [value for values in query.values() for value in values if len(value) >= 32]
    wrong = client.get(
        LEGACY, params={"generation_id": "0" * 32}, headers={"Authorization": f"Bearer {WRONG_KEY}"}
    )
    assert wrong.status_code == 401
    return signatures


def test_serve_metrics_and_logs(tmp_path: Path) -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    webhook = f"http://127.0.0.1:{receiver.server_port}/hook?token={RECEIVER_TOKEN}"
    process, log = start(tmp_path, port)
    try:
        wait_ready(base_url, process, log)
        headers = {"Authorization": f"Bearer {TEST_KEY}"}
        with httpx.Client(base_url=base_url, headers=headers, timeout=30) as client:
            signatures = full_run(client, webhook)
            completed = ("reelforge_jobs_completed_total", frozenset({("model", MODEL)}))
            delivered = (
                "reelforge_webhook_deliveries_total",
                frozenset({("outcome", "delivered")}),
            )
            deadline = time.monotonic() + 15
            while (
                (now := counts(client.get("/metrics").text)).get(completed) != 2
                or now.get(delivered) != len(Receiver.received)
                or len(Receiver.received) < 2
            ):
                assert time.monotonic() < deadline, f"metrics never caught up: {now}"
                time.sleep(0.2)
            # new connections: uvicorn's processes take turns, each scrape must agree
            scrapes = [counts(httpx.get(f"{base_url}/metrics").text) for _ in range(6)]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
        receiver.shutdown()
        receiver.server_close()
    create = (
        "reelforge_http_requests_total",
        frozenset({("method", "POST"), ("route", LEGACY), ("status", "200")}),
    )
    created = ("reelforge_jobs_created_total", frozenset({("model", MODEL)}))
    ready = ("reelforge_model_ready", frozenset({("model", MODEL)}))
    for samples in scrapes:
        assert samples[create] == 2
        assert samples[created] == 2
        assert samples[completed] == 2
        assert samples[ready] == 1

    text = log.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    requests = [line for line in lines if line["logger"] == "reelforge.access"]
    assert {line["route"] for line in requests} >= {LEGACY, "/metrics", "/files/{key:path}"}
    jobs = [line for line in lines if line["logger"] == "reelforge.jobs"]
    assert [line["state"] for line in jobs].count("completed") == 2
    assert all(line["attempt"] == 1 for line in jobs if line["state"] == "completed")
    secrets = [TEST_KEY, WRONG_KEY, URL_SECRET, WEBHOOK_SECRET, RECEIVER_TOKEN, *signatures]
    assert signatures
    assert all(len(secret) >= 16 for secret in secrets)
    for secret in secrets:
        assert secret not in text, f"a secret is in the server's log: {secret[:6]}…"
