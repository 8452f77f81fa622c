"""Webhooks cost the API nothing: server CPU per create and per poll with every job carrying
a ``callback_url`` to a receiver that sleeps 5 s per request, against the same run without
webhooks, the two interleaved on one server.

Run: ``python bench/webhooks.py`` (about two minutes). One ``reelforge serve`` (one API
process, one worker at a small preview scale) on a free loopback port with a temp data
directory; the receiver is a threaded HTTP server in this process on another loopback port.
Each round creates ``JOBS`` generations with webhooks and ``JOBS`` without (which goes first
alternates), then polls each batch ``POLLS`` times. The CPU measured is the API process's
own (the ``serve`` process, which runs uvicorn; its worker process, which renders and
delivers, is not counted). Printed: CPU ms per create and per poll in each mode, and the
ratio with/without, which should stay within 1 ± ``TOLERANCE``.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from closed_loop import Server, load, process_cpu_clock
from harness import ROUTE, free_port
from service import service_env, started

BODY = {"model": "minimax/hailuo-02", "prompt": "A lighthouse at dusk", "duration": 6}
JOBS = 200
POLLS = 1000
CLIENTS = 20
ROUNDS = 9
WARMUP = 400
RECEIVER_SLEEP_S = 5.0
TOLERANCE = 0.10


@contextmanager
def sleepy_receiver() -> Iterator[tuple[str, list[int]]]:
    """A receiver answering 200 after ``RECEIVER_SLEEP_S``; yields its URL and a one-item
    list counting the requests it got."""
    got = [0]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            got[0] += 1
            time.sleep(RECEIVER_SLEEP_S)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", got
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def serve() -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="reelforge-bench-") as name:
        env = service_env(Path(name), free_port())
        env.update(REELFORGE_WEBHOOK_ALLOW_PRIVATE="true", REELFORGE_PREVIEW_SCALE="0.05")
        command = [sys.executable, "-m", "reelforge", "serve", "--workers", "1"]
        with started(command, env, Path(name)) as server:
            yield server


def api_cpu_s(server: Server) -> float:
    """CPU seconds of the API process alone (all its threads, none of its children)."""
    return time.clock_gettime(process_cpu_clock(server.process.pid))


def phase(server: Server, callback_url: str | None) -> tuple[float, float]:
    """``JOBS`` creates then ``POLLS`` polls of them: API CPU ms per create and per poll."""
    body = json.dumps(BODY | ({"callback_url": callback_url} if callback_url else {})).encode()
    before = api_cpu_s(server)
    created = load(server, JOBS, CLIENTS, lambda _: ("POST", ROUTE, body))
    create_ms = (api_cpu_s(server) - before) * 1000 / JOBS
    ids = [answer["generation_id"] for answer in created.answers]

    def poll(index: int) -> tuple[str, str, bytes]:
        return "GET", f"{ROUTE}?generation_id={ids[index % len(ids)]}", b""

    before = api_cpu_s(server)
    load(server, POLLS, CLIENTS, poll)
    return create_ms, (api_cpu_s(server) - before) * 1000 / POLLS


def main() -> int:
    figures: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    with sleepy_receiver() as (url, got), serve() as server:
        plain = json.dumps(BODY).encode()
        load(server, WARMUP, CLIENTS, lambda _: ("POST", ROUTE, plain))
        for round_ in range(ROUNDS):
            order = (True, False) if round_ % 2 == 0 else (False, True)
            for hooks in order:
                figures[hooks].append(phase(server, url if hooks else None))
        received = got[0]
    (create_on, poll_on), (create_off, poll_off) = (
        [statistics.median(values) for values in zip(*figures[hooks], strict=True)]
        for hooks in (True, False)
    )
    print(f"{ROUNDS} rounds of {JOBS} creates + {POLLS} polls each way; receiver sleeps")
    print(f"{RECEIVER_SLEEP_S:g} s per request and got {received} during the run")
    print(f"API CPU per create: {create_on:.3f} ms with webhooks, {create_off:.3f} ms without")
    print(f"API CPU per poll:   {poll_on:.3f} ms with webhooks, {poll_off:.3f} ms without")
    ratios = (create_on / create_off, poll_on / poll_off)
    for hooks in (True, False):
        rows = ", ".join(f"{c:.3f}/{p:.3f}" for c, p in figures[hooks])
        print(f"  rounds {'with' if hooks else 'without'} (create/poll ms): {rows}")
    print(f"ratio with/without: create {ratios[0]:.3f}, poll {ratios[1]:.3f}")
    within = all(abs(ratio - 1) <= TOLERANCE for ratio in ratios)
    print(f"within {TOLERANCE:.0%}: {'yes' if within else 'NO'}")
    return 0 if within else 1


if __name__ == "__main__":
    raise SystemExit(main())
