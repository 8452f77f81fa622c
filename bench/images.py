"""Hostile and large images against a real server: per case, the answer, the time, and the
CPU and peak extra memory of the API process and of the worker process.

Run: ``python bench/images.py`` (about a minute). It starts ``python -m reelforge serve
--workers 1`` (the preview engine at scale 0.25, image URLs allowed to reach loopback) on a
free port and a temp data directory, and serves the URL cases from a loopback HTTP server in
this process. Each case is sent as base64 (answered at submit) and, where marked, as a URL
(answered by the worker: the time runs to the generation's end, a video rendered for an
accepted image). Before each case both processes' peak RSS is reset (``/proc/<pid>/clear_refs``);
"+MiB" is the peak (``VmHWM``) above the resident size just before. CPU is user + system time
from ``/proc/<pid>/stat``. The floor is a 640x480 PNG sent the same way, first: the time
column is also shown as a multiple of it. Targets: under 2 s of CPU and 256 MiB in each
process; every case refused or accepted, never a 500.
"""

from __future__ import annotations

import base64
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, for tests/

from tests import hostile_images as hostile
from tests.pictures import encoded, textured

from closed_loop import HEADERS, Server
from harness import ROUTE, free_port
from service import service_env, started

JOB_DEADLINE_S = 120.0
TICKS = os.sysconf("SC_CLK_TCK")
MODEL = "minimax/hailuo-02"


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], bytes]
    by_url: bool = False
    at_once: int = 1
    """Copies sent together, each on its own connection."""


CASES = (
    Case("48 MP photo, 8000x6000 JPEG", hostile.photo, by_url=True),
    Case("JPEG claiming 9000x9000", hostile.claimed_jpeg, by_url=True),
    Case("9000x9000 JPEG, half its data", hostile.truncated_jpeg),
    Case("4 at once: 9000x9000 JPEG, half its data", hostile.truncated_jpeg, at_once=4),
    Case("1-bit PNG 9400x9400", hostile.blank_png, by_url=True),
    Case("RGB PNG 9400x9400", lambda: hostile.blank_png(9400, 9400, 8, 2)),
    Case("progressive scan bomb", hostile.scan_bomb, by_url=True),
    Case("progressive 3200x3200, 90 scans", lambda: hostile.scan_bomb(3200, 80)),
    Case("20 MB of JPEG segments", hostile.jpeg_marker_flood),
    Case("20 MB of PNG chunks", hostile.png_chunk_flood),
    Case("EXIF bomb (65535 tags)", hostile.exif_bomb),
    Case("EXIF that broke exif_transpose", hostile.malformed_exif_jpeg),
    Case("JPEG of exactly 20 MiB", lambda: hostile.padded_jpeg(20 * hostile.MIB)),
    Case("JPEG of 20 MiB + 1 byte", lambda: hostile.padded_jpeg(20 * hostile.MIB + 1)),
    Case("GIF claiming 9000x9000", hostile.huge_gif),
    Case("WebP 640x480", lambda: encoded(textured(640, 480), "WEBP")),
)


@dataclass(frozen=True)
class Usage:
    """A process's CPU seconds so far and its resident MiB now; ``peak_mib`` since the reset."""

    cpu_s: float
    rss_mib: float
    peak_mib: float


def usage(pid: int) -> Usage:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu_s = (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return Usage(
        cpu_s, int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024
    )


def reset_peak(pid: int) -> Usage:
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return usage(pid)


def worker_pid(api_pid: int) -> int:
    """The one worker ``serve`` started (a multiprocessing child of the API process)."""
    for child in Path(f"/proc/{api_pid}/task/{api_pid}/children").read_text().split():
        if b"--multiprocessing-fork" in Path(f"/proc/{child}/cmdline").read_bytes():
            return int(child)
    raise RuntimeError("no worker process found")


class _Files(ThreadingHTTPServer):
    files: dict[str, bytes]


class _Handler(BaseHTTPRequestHandler):
    server: _Files

    def do_GET(self) -> None:
        body = self.server.files[self.path]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@contextmanager
def file_server() -> Iterator[_Files]:
    server = _Files(("127.0.0.1", 0), _Handler)
    server.files = {}
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def serve_images() -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix="reelforge-images-") as name:
        env = service_env(Path(name), free_port())
        env.update(REELFORGE_FETCH_ALLOW_PRIVATE="true", REELFORGE_PREVIEW_SCALE="0.25")
        command = [sys.executable, "-m", "reelforge", "serve", "--workers", "1"]
        with started(command, env, Path(name)) as server:
            yield server


def answer_of(client: httpx.Client, value: str) -> tuple[str, str | None]:
    """Send one create; its answer ('200', '400 InvalidImage', ...) and the id if queued."""
    response = client.post(ROUTE, json={"model": MODEL, "prompt": "x", "first_frame_image": value})
    if response.status_code != 200:
        error = response.json().get("error", {})
        return f"{response.status_code} {error.get('name', '')}".strip(), None
    return "200", response.json()["generation_id"]


def job_end(client: httpx.Client, generation_id: str) -> str:
    """Poll to the generation's end: 'completed' or 'error <name>'."""
    deadline = time.monotonic() + JOB_DEADLINE_S
    while time.monotonic() < deadline:
        answer = client.get(ROUTE, params={"generation_id": generation_id}).json()
        if answer["status"] == "completed":
            return "completed"
        if answer["status"] == "error":
            return f"error {answer['error']['name']}"
        time.sleep(0.05)
    return "still running"


@dataclass(frozen=True)
class Outcome:
    answer: str
    answer_s: float
    end_s: float | None
    """Seconds from the create to its generation's end; None when refused at submit."""
    figures: list[float]
    """Per process (API, worker): CPU seconds and peak extra MiB."""


def run_case(client: httpx.Client, pids: tuple[int, int], value: str, at_once: int = 1) -> Outcome:
    """``at_once`` creates sent together and, if queued, their jobs to the end."""
    before = [reset_peak(pid) for pid in pids]
    started_at = time.perf_counter()
    with ThreadPoolExecutor(at_once) as pool:
        answers = list(pool.map(lambda _: answer_of(client, value), range(at_once)))
    answer_s, end_s = time.perf_counter() - started_at, None
    answer = " / ".join(sorted({answer for answer, _ in answers}))
    ends = {job_end(client, generation_id) for _, generation_id in answers if generation_id}
    if ends:
        answer += " → " + " / ".join(sorted(ends))
        end_s = time.perf_counter() - started_at
    after = [usage(pid) for pid in pids]
    figures = []
    for was, now in zip(before, after, strict=True):
        figures += [now.cpu_s - was.cpu_s, now.peak_mib - was.rss_mib]
    return Outcome(answer, answer_s, end_s, figures)


def row(name: str, form: str, data: bytes, outcome: Outcome, floor_s: float) -> str:
    api_cpu, api_mib, worker_cpu, worker_mib = outcome.figures
    end = "" if outcome.end_s is None else f"{outcome.end_s:.2f}"
    return (
        f"| {name} | {form} | {len(data) / 1e6:.2f} | {outcome.answer} | "
        f"{outcome.answer_s:.2f} ({outcome.answer_s / floor_s:.0f}x) | {end} | "
        f"{api_cpu:.2f} | {api_mib:.0f} | {worker_cpu:.2f} | {worker_mib:.0f} |"
    )


def main() -> None:
    with (
        serve_images() as server,
        file_server() as files,
        httpx.Client(base_url=server.base_url, headers=HEADERS, timeout=120) as client,
    ):
        pids = (server.process.pid, worker_pid(server.process.pid))
        floor = encoded(textured(640, 480), "PNG")
        run_case(client, pids, base64.b64encode(floor).decode())  # warms both processes
        floor_run = run_case(client, pids, base64.b64encode(floor).decode())
        floor_s = floor_run.answer_s
        print(
            "| case | sent as | MB | answer | answer s (x floor) | end s | API CPU s "
            "| API +MiB | worker CPU s | worker +MiB |"
        )
        print("|---|---|---:|---|---:|---:|---:|---:|---:|---:|")
        print(row("floor: 640x480 PNG", "base64", floor, floor_run, floor_s))
        for index, case in enumerate(CASES):
            data = case.make()
            files.files[f"/{index}"] = data
            forms = [("base64", base64.b64encode(data).decode())]
            if case.by_url:
                forms.append(("URL", f"http://127.0.0.1:{files.server_address[1]}/{index}"))
            for form, value in forms:
                outcome = run_case(client, pids, value, case.at_once)
                print(row(case.name, form, data, outcome, floor_s), flush=True)


if __name__ == "__main__":
    main()
