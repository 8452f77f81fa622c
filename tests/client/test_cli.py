"""``reelforge generate | status | download`` against a real ``reelforge serve`` subprocess,
run as a user would: in the directory the server was started in and with its environment,
with no ``--api-key`` and no ``--base-url`` (the CLI finds the key the server stored and
the local server's URL)."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image
from typer.testing import CliRunner, Result

from reelforge.cli import app
from reelforge.client import Client
from tests.client.environment import user_environment
from tests.client.inputs import PORTRAIT
from tests.service import free_port
from tests.videos import probe


@dataclass(frozen=True)
class Served:
    """A running ``reelforge serve``: its directory, environment and port."""

    cwd: Path
    env: dict[str, str]
    port: int

    def invoke(self, *args: str) -> Result:
        """``reelforge`` in this process (quicker), with the server's URL and key as flags."""
        key = (self.cwd / "data" / "api-key").read_text().strip()
        flags = ["--base-url", f"http://127.0.0.1:{self.port}/v2", "--api-key", key]
        return CliRunner().invoke(app, [*args, *flags])

    def reelforge(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "reelforge", *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


def wait_until_ready(process: subprocess.Popen[bytes], port: int, key: Path, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, f"reelforge serve stopped:\n{log.read_text()}"
        try:
            if key.exists() and httpx.get(f"http://127.0.0.1:{port}/healthz").is_success:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.1)
    raise AssertionError(f"reelforge serve did not start within 30 s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    cwd, port = tmp_path_factory.mktemp("cli"), free_port()
    env = user_environment(
        REELFORGE_DATA_DIR="data",
        REELFORGE_PORT=str(port),
        REELFORGE_X264_PRESET="ultrafast",
    )
    log = cwd / "serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "reelforge", "serve"],
            cwd=cwd,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until_ready(process, port, cwd / "data" / "api-key", log)
            yield Served(cwd, env, port)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def one_line(text: str) -> str:
    """``text`` with rich's line wrapping undone."""
    return " ".join(text.split())


def test_generate_uses_the_stored_key_and_the_local_server(served: Served) -> None:
    PORTRAIT.save(served.cwd / "photo.png")
    done = served.reelforge(
        "generate", "A lighthouse [Push in]", "--image", "photo.png", "-o", "out.mp4"
    )
    assert done.returncode == 0, done.stderr
    *_, saved, url = done.stdout.strip().splitlines()
    assert saved.startswith("out.mp4  (")
    assert url.startswith(f"http://127.0.0.1:{served.port}/files/")
    clip = probe(served.cwd / "out.mp4")
    assert ((clip.width, clip.height), len(clip.frames)) == ((768, 1152), 150)
    assert httpx.get(url).content == (served.cwd / "out.mp4").read_bytes()


def test_json_then_status_then_download(served: Served) -> None:
    done = served.reelforge("generate", "A lighthouse at dusk", "--json", "-o", "first.mp4")
    assert done.returncode == 0, done.stderr
    generation = json.loads(done.stdout)
    assert generation["status"] == "completed"
    assert generation["video"]["url"].startswith(f"http://127.0.0.1:{served.port}/files/")

    status = served.reelforge("status", generation["id"])
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["id"] == generation["id"]
    assert json.loads(status.stdout)["status"] == "completed"

    download = served.reelforge("download", generation["id"], "-o", "again.mp4")
    assert download.returncode == 0, download.stderr
    assert download.stdout.strip() == "again.mp4"
    again = served.cwd / "again.mp4"
    assert again.read_bytes() == (served.cwd / "first.mp4").read_bytes()
    clip = probe(again)
    assert ((clip.width, clip.height), len(clip.frames)) == ((1366, 768), 150)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--duration", "7"], "duration: Input should be 6 or 10 (got 7)"),
        (["--image", "wide.png"], "first_frame_image: image is 1000x300"),
        (["--model", "[nope]"], "model: '[nope]' is not served here"),
    ],
    ids=["by the server", "by the client", "with brackets"],
)
def test_a_refused_input_exits_2_with_the_message(
    served: Served, args: list[str], message: str
) -> None:
    Image.new("RGB", (1000, 300), (90, 90, 90)).save(served.cwd / "wide.png")
    done = served.reelforge("generate", "x", *args, "-o", "refused.mp4")
    assert done.returncode == 2, done.stderr
    assert message in one_line(done.stderr)
    assert not (served.cwd / "refused.mp4").exists()


def test_an_unreachable_server_exits_4_after_backing_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process with the client's sleeps recorded instead of slept: a server refusing
    connections is tried 3 times, 0.5 x 2^n s x jitter (0.5..1) apart, then the CLI exits 4."""
    slept: list[float] = []
    sleep, caller = time.sleep, threading.get_ident()

    def recorded(seconds: float) -> None:
        """``time.sleep`` is the whole process's: only this thread's sleeps are the CLI's."""
        if threading.get_ident() == caller:
            slept.append(seconds)
        else:
            sleep(seconds)

    monkeypatch.setattr("reelforge.client.api.time.sleep", recorded)
    monkeypatch.chdir(tmp_path)
    # A port bound but not listening refuses every connection, and no other test's server
    # can take it meanwhile (a port found free and released could be).
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{held.getsockname()[1]}/v2"
        args = ["status", "some-id", "--base-url", closed, "--api-key", "k"]
        done = CliRunner().invoke(app, args)
    assert done.exit_code == 4, done.output
    assert f"cannot reach {closed}" in one_line(done.stderr)
    assert "no connection after 3 tries" in one_line(done.stderr)
    assert len(slept) == 2
    for attempt, pause in enumerate(slept):
        assert 0.5 * 2**attempt * 0.5 <= pause <= 0.5 * 2**attempt


@pytest.mark.parametrize("command", ["status", "cancel", "download"])
def test_an_id_this_key_does_not_have_exits_5(served: Served, command: str) -> None:
    output = ["-o", "never.mp4"] if command == "download" else []
    done = served.reelforge(command, "0123456789abcdef0123456789abcdef", *output)
    assert done.returncode == 5, done.stderr
    assert one_line(done.stderr) == (
        "error: no generation 0123456789abcdef0123456789abcdef for this key"
    )


def test_cancelling_a_completed_generation_says_it_had_already_ended(served: Served) -> None:
    done = served.reelforge("generate", "A lighthouse", "--json", "-o", "ended.mp4")
    assert done.returncode == 0, done.stderr
    generation_id = json.loads(done.stdout)["id"]
    cancel = served.reelforge("cancel", generation_id)
    assert cancel.returncode == 0, cancel.stderr
    said = f"{generation_id} had already ended (completed); nothing to cancel"
    assert one_line(cancel.stdout) == said
    assert json.loads(served.reelforge("status", generation_id).stdout)["status"] == "completed"


def test_generate_overwrites_an_existing_file_only_with_force(served: Served) -> None:
    mine = served.cwd / "mine.mp4"
    mine.write_bytes(b"my own video")
    refused = served.reelforge("generate", "A lighthouse", "-o", "mine.mp4")
    assert refused.returncode == 2, refused.stderr
    assert one_line(refused.stderr) == "error: mine.mp4 exists; pass --force to overwrite it"
    assert mine.read_bytes() == b"my own video"
    forced = served.reelforge("generate", "A lighthouse", "-o", "mine.mp4", "--force")
    assert forced.returncode == 0, forced.stderr
    assert len(probe(mine).frames) == 150


def table_ids(text: str) -> list[str]:
    """The ids in the first column of ``reelforge list``'s table, top to bottom."""
    return [line.split()[0] for line in text.splitlines() if re.match(r"\s*[0-9a-f]{32}\s", line)]


def test_list_shows_the_newest_first_and_delete_removes_one(served: Served) -> None:
    key = (served.cwd / "data" / "api-key").read_text().strip()
    with Client(f"http://127.0.0.1:{served.port}/v2", key) as client:
        made = [client.create(f"clip {n}").id for n in range(3)]

    shown = served.reelforge("list", "--limit", "2")
    assert shown.returncode == 0, shown.stderr
    assert table_ids(shown.stdout) == [made[2], made[1]]
    assert one_line(shown.stderr) == f"more: reelforge list --after {made[1]}, or --all"

    page = served.invoke("list", "--json", "--limit", "2", "--after", made[1])
    assert page.exit_code == 0, page.output
    assert json.loads(page.stdout)["data"][0]["id"] == made[0]

    deleted = served.reelforge("delete", made[1])
    assert deleted.returncode == 0, deleted.stderr
    assert one_line(deleted.stdout) == f"deleted {made[1]} with its video and inputs"
    everything = json.loads(served.invoke("list", "--all", "--json").stdout)
    ids = [generation["id"] for generation in everything["data"]]
    assert ids[:2] == [made[2], made[0]]
    assert (made[1] in ids, everything["has_more"]) == (False, False)
    assert served.invoke("status", made[1]).exit_code == 5
    again = served.invoke("delete", made[1])
    assert again.exit_code == 5, again.output
    assert one_line(again.stderr) == f"error: no generation {made[1]} for this key"


def test_list_all_and_limit_together_are_refused(served: Served) -> None:
    done = served.invoke("list", "--all", "--limit", "5")
    assert done.exit_code == 2, done.output
    assert one_line(done.stderr) == "error: --all and --limit: give one of them"
