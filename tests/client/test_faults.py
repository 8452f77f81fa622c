"""The client against a scripted server of the test's own on loopback: busy answers and
Retry-After, creates that must not be sent twice, dropped and resumed downloads, expired
links, failed generations and deadlines (the SDK and the ``reelforge`` CLI), and the polling
schedule of ``flows.wait`` driven by hand with a fake clock."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate
from pathlib import Path

import anyio
import httpx
import pytest

from reelforge.client import (
    ApiError,
    AsyncClient,
    Client,
    Generation,
    Policy,
    Timeout,
    TransportError,
    flows,
)
from reelforge.client.flows import Call, Failed, Reply, Sleep
from tests.client.environment import user_environment
from tests.client.loopback import (
    HANG_UP,
    LEGACY,
    Answer,
    Route,
    ScriptedServer,
    Seen,
    as_json,
    generation,
    in_turn,
    serving,
)
from tests.client.recording import Recording
from tests.service import free_port

KEY = "rf_fault-test-key"
FAST = Policy(
    retries=3,
    retry_base=0.01,
    retry_cap=0.5,  # Retry-After is honoured up to 4 x retry_cap = 2 s
    first_poll=0.01,
    poll_growth=1.5,
    poll_cap=0.05,
    jitter=lambda: 1.0,
)
VIDEO = random.Random(7).randbytes(200_000)
SIZE = len(VIDEO)
HALF = SIZE // 2
QUEUED = as_json({"generation_id": "g1", "status": "queued"})
BUSY = {"error": {"name": "Busy", "message": "try again"}}


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with serving() as scripted:
        yield scripted


@pytest.fixture
def client(server: ScriptedServer) -> Iterator[Client]:
    with Client(f"{server.base_url}/v2", KEY, policy=FAST) as sdk:
        yield sdk


# --- busy answers and Retry-After -------------------------------------------------------


@pytest.mark.parametrize("retry_after", ["1", "0.3"])
def test_a_poll_answered_503_is_sent_again_after_retry_after(
    server: ScriptedServer, client: Client, retry_after: str
) -> None:
    busy = as_json(BUSY, 503, {"Retry-After": retry_after})
    server.route("GET", LEGACY, in_turn(busy, generation("completed", url="http://x/v.mp4")))
    done = client.wait("g1", timeout=10)
    assert done.video_url == "http://x/v.mp4"
    first, second = server.requests("GET", LEGACY)
    assert float(retry_after) <= second.at - first.at < float(retry_after) + 0.5


@pytest.mark.parametrize("status", [429, 503])
def test_a_create_answered_busy_is_sent_again(
    server: ScriptedServer, client: Client, status: int
) -> None:
    server.route("POST", LEGACY, in_turn(as_json(BUSY, status, {"Retry-After": "0.05"}), QUEUED))
    assert client.create("A lighthouse").id == "g1"
    first, second = server.requests("POST", LEGACY)
    assert json.loads(first.body) == json.loads(second.body)
    assert json.loads(first.body)["prompt"] == "A lighthouse"


def test_a_create_answered_500_is_not_sent_again(server: ScriptedServer, client: Client) -> None:
    failure = {"error": {"name": "InternalError", "message": "the server failed"}}
    server.route("POST", LEGACY, in_turn(as_json(failure, 500), QUEUED))
    with pytest.raises(ApiError) as refused:
        client.create("x")
    assert (refused.value.status, refused.value.name) == (500, "InternalError")
    assert len(server.requests("POST", LEGACY)) == 1


def test_a_create_left_unanswered_is_not_sent_again(server: ScriptedServer, client: Client) -> None:
    server.route("POST", LEGACY, in_turn(HANG_UP, QUEUED))
    with pytest.raises(TransportError, match="may not have completed"):
        client.create("x")
    assert len(server.requests("POST", LEGACY)) == 1


def test_a_create_refused_a_connection_is_sent_again() -> None:
    """Nothing reached a server that was not listening yet: the create is retried."""
    port, transport = free_port(), Recording()
    policy = Policy(
        retries=8, unreachable_retries=8, retry_base=0.05, retry_cap=0.2, jitter=lambda: 1.0
    )
    base_url = f"http://127.0.0.1:{port}/v2"
    with (
        Client(base_url, KEY, policy=policy, transport=transport) as client,
        ThreadPoolExecutor(1) as pool,
    ):
        created = pool.submit(client.create, "x")
        deadline = time.monotonic() + 5
        while len(transport.requests) < 3:  # the third starts once the second was refused
            assert time.monotonic() < deadline
            assert not created.done()
            time.sleep(0.01)
        with serving(port) as late:
            late.route("POST", LEGACY, in_turn(QUEUED))
            assert created.result(timeout=10).id == "g1"
            assert len(late.requests("POST", LEGACY)) == 1


def test_a_server_that_refuses_connections_is_given_up_on_after_the_unreachable_retries() -> None:
    """A stopped server: 3 tries (``unreachable_retries`` = 2), not the 4 of ``retries``."""
    transport = Recording()
    base_url = f"http://127.0.0.1:{free_port()}/v2"
    with (
        Client(base_url, KEY, policy=FAST, transport=transport) as client,
        pytest.raises(TransportError, match="no connection after 3 tries; last: ConnectError"),
    ):
        client.get("g1")
    assert len(transport.requests) == FAST.unreachable_retries + 1 == 3


# --- downloads --------------------------------------------------------------------------


def range_start(seen: Seen) -> int | None:
    """``k`` of a ``Range: bytes=k-`` request, None without one."""
    header = seen.headers.get("range")
    if header is None:
        return None
    first, _, last = header.removeprefix("bytes=").partition("-")
    assert (header.startswith("bytes="), last) == (True, ""), header
    return int(first)


CUT = Answer(200, VIDEO[:HALF], {"Content-Type": "video/mp4"}, announce=SIZE)
"""Headers for the whole video, half of its body, then the connection closes."""


def resuming(seen: Seen) -> Answer:
    start = range_start(seen)
    if start is None:
        return CUT
    content_range = f"bytes {start}-{SIZE - 1}/{SIZE}"
    return Answer(206, VIDEO[start:], {"Content-Range": content_range})


def overstating(seen: Seen) -> Answer:
    """Resumes, but states a total 1000 bytes beyond what it ever sends."""
    start = range_start(seen) or 0
    content_range = f"bytes {start}-{SIZE + 999}/{SIZE + 1000}"
    return Answer(206, VIDEO[start:], {"Content-Range": content_range}) if start else CUT


def fetch_video(kind: str, server: ScriptedServer, path: Path) -> Path:
    """Get generation g1 and download its video, with the sync or the async client."""
    base_url = f"{server.base_url}/v2"
    if kind == "sync":
        with Client(base_url, KEY, policy=FAST) as client:
            return client.download(client.get("g1"), path)

    async def run() -> Path:
        async with AsyncClient(base_url, KEY, policy=FAST) as client:
            return await client.download(await client.get("g1"), path)

    return anyio.run(run)


def video_at(server: ScriptedServer, query: str = "sig=a") -> Answer:
    return generation("completed", url=f"{server.base_url}/files/v.mp4?{query}")


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_a_dropped_download_resumes_with_a_range_request(
    server: ScriptedServer, kind: str, tmp_path: Path
) -> None:
    server.route("GET", LEGACY, in_turn(video_at(server)))
    server.route("GET", "/files/v.mp4", resuming)
    assert fetch_video(kind, server, tmp_path / "v.mp4") == tmp_path / "v.mp4"
    assert (tmp_path / "v.mp4").read_bytes() == VIDEO
    assert list(tmp_path.iterdir()) == [tmp_path / "v.mp4"]
    first, second = server.requests("GET", "/files/v.mp4")
    assert ("range" not in first.headers, range_start(second)) == (True, HALF)


def test_a_server_that_ignores_range_still_gives_the_whole_file(
    server: ScriptedServer, kind: str, tmp_path: Path
) -> None:
    server.route("GET", LEGACY, in_turn(video_at(server)))
    server.route("GET", "/files/v.mp4", in_turn(CUT, Answer(200, VIDEO)))
    fetch_video(kind, server, tmp_path / "v.mp4")
    assert (tmp_path / "v.mp4").read_bytes() == VIDEO
    assert list(tmp_path.iterdir()) == [tmp_path / "v.mp4"]
    assert range_start(server.requests("GET", "/files/v.mp4")[1]) == HALF


@pytest.mark.parametrize("files", [in_turn(CUT), overstating], ids=["always-cut", "overstating"])
def test_a_size_that_never_matches_is_a_transport_error(
    server: ScriptedServer, kind: str, tmp_path: Path, files: Route
) -> None:
    server.route("GET", LEGACY, in_turn(video_at(server)))
    server.route("GET", "/files/v.mp4", files)
    with pytest.raises(TransportError, match="download of g1 failed 4 times"):
        fetch_video(kind, server, tmp_path / "v.mp4")
    assert not (tmp_path / "v.mp4").exists()
    assert len(server.requests("GET", "/files/v.mp4")) == FAST.retries + 1


def test_an_expired_link_is_renewed_from_the_generation(
    server: ScriptedServer, kind: str, tmp_path: Path
) -> None:
    server.route("GET", LEGACY, in_turn(video_at(server, "sig=old"), video_at(server, "sig=new")))
    gone = as_json({"error": {"name": "Gone", "message": "this link has expired"}}, 410)
    server.route(
        "GET",
        "/files/v.mp4",
        lambda seen: gone if seen.query["sig"] == "old" else Answer(200, VIDEO),
    )
    fetch_video(kind, server, tmp_path / "v.mp4")
    assert (tmp_path / "v.mp4").read_bytes() == VIDEO
    calls = [(s.path, s.query.get("sig")) for s in server.seen]
    assert calls == [
        (LEGACY, None),
        ("/files/v.mp4", "old"),
        (LEGACY, None),
        ("/files/v.mp4", "new"),
    ]


@pytest.mark.timeout(20)
def test_a_link_that_stays_expired_ends_in_an_error(
    server: ScriptedServer, kind: str, tmp_path: Path
) -> None:
    server.route("GET", LEGACY, in_turn(video_at(server)))
    gone = as_json({"error": {"name": "Gone", "message": "this link has expired"}}, 410)
    server.route("GET", "/files/v.mp4", in_turn(gone))
    with pytest.raises(ApiError) as refused:
        fetch_video(kind, server, tmp_path / "v.mp4")
    assert refused.value.status == 410
    assert len(server.requests("GET", "/files/v.mp4")) == FAST.retries + 1
    assert not (tmp_path / "v.mp4").exists()


# --- deadlines --------------------------------------------------------------------------


def test_wait_raises_timeout_at_the_deadline(server: ScriptedServer, client: Client) -> None:
    server.route("GET", LEGACY, in_turn(generation("generating", progress=40)))
    started = time.monotonic()
    with pytest.raises(Timeout, match=r"g1 still generating after 0\.5 s"):
        client.wait("g1", timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 1.5
    assert len(server.requests("GET", LEGACY)) >= 8  # polled every 10..50 ms


def test_a_long_poll_interval_is_cut_at_the_deadline(
    server: ScriptedServer, tmp_path: Path
) -> None:
    server.route("POST", LEGACY, in_turn(QUEUED))
    server.route("GET", LEGACY, in_turn(generation("queued")))
    slow = Policy(first_poll=30.0, poll_cap=60.0, jitter=lambda: 1.0)
    started = time.monotonic()
    with (
        Client(f"{server.base_url}/v2", KEY, policy=slow) as client,
        pytest.raises(Timeout, match=r"g1 still queued after 0\.5 s"),
    ):
        client.generate("x", timeout=0.5, output=tmp_path / "out.mp4")
    assert time.monotonic() - started < 5.0  # not the 30 s of the first interval
    first, last = server.requests("GET", LEGACY)  # at the start and at the deadline
    assert 0.45 <= last.at - first.at < 0.9


# --- the CLI over the same faults -------------------------------------------------------


def reelforge(server: ScriptedServer, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``reelforge generate`` against the scripted server, in a clean environment."""
    flags = ["--base-url", f"{server.base_url}/v2", "--api-key", KEY, "-o", "out.mp4"]
    return subprocess.run(
        [sys.executable, "-m", "reelforge", "generate", "A lighthouse", *flags, *args],
        cwd=cwd,
        env=user_environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_exits_1_with_the_error_when_the_generation_fails(
    server: ScriptedServer, tmp_path: Path
) -> None:
    failure = ("EngineFailed", "out of memory at [step 3] of 150")  # shown verbatim, not as markup
    server.route("POST", LEGACY, in_turn(QUEUED))
    server.route(
        "GET", LEGACY, in_turn(generation("generating"), generation("error", error=failure))
    )
    done = reelforge(server, tmp_path)
    assert done.returncode == 1, done.stderr
    stderr = " ".join(done.stderr.split())  # rich wraps long lines
    assert "EngineFailed: out of memory at [step 3] of 150" in stderr
    assert not (tmp_path / "out.mp4").exists()


def test_cli_exits_3_at_its_timeout(server: ScriptedServer, tmp_path: Path) -> None:
    server.route("POST", LEGACY, in_turn(QUEUED))
    server.route("GET", LEGACY, in_turn(generation("generating", progress=10)))
    done = reelforge(server, tmp_path, "--timeout", "1")
    assert done.returncode == 3, done.stderr
    assert "timeout" in done.stderr
    first, *_, last = server.requests("GET", LEGACY)
    assert 0.9 <= last.at - first.at < 2.0  # the deadline began just before the first poll
    assert not (tmp_path / "out.mp4").exists()


# --- the polling schedule, driven by hand (the fallback where a server has no stream) -----


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def poll(status: str) -> Reply:
    return Reply(200, {}, json.dumps({"id": "g1", "status": status, "progress": 5}).encode())


def answer_generating_until_the_end(
    flow: flows.Flow[Generation], clock: FakeClock, deadline: float, sleeps: list[float]
) -> None:
    """Answer each poll "generating" (a poll takes 0.25 s on ``clock``) and carry out each
    sleep, which must not reach past ``deadline``, until the flow ends."""
    action = next(flow)
    while True:
        assert action == Call("GET", LEGACY.removeprefix("/v2"), {"generation_id": "g1"})
        clock.now += 0.25
        action = flow.send(poll("generating"))
        assert isinstance(action, Sleep)
        assert action.seconds <= deadline - clock.now
        sleeps.append(action.seconds)
        clock.now += action.seconds
        action = flow.send(None)


def test_wait_sleeps_first_poll_then_grows_to_the_cap_and_cuts_the_last_sleep() -> None:
    clock = FakeClock()
    sleeps: list[float] = []
    policy = Policy(first_poll=1.0, poll_growth=2.0, poll_cap=5.0, clock=clock, stream=False)
    flow = flows.wait("g1", 20.0, None, policy)
    with pytest.raises(Timeout):
        answer_generating_until_the_end(flow, clock, 1020.0, sleeps)
    # 1.25 + 2.25 + 4.25 + 5.25 + 5.25 = 18.25 s gone; 1.5 s left after the sixth poll
    assert sleeps == [1.0, 2.0, 4.0, 5.0, 5.0, 1.5]
    assert clock.now == 1020.25  # the last poll started at the deadline, not after it


def test_wait_reports_each_poll_and_returns_the_completed_generation() -> None:
    clock = FakeClock()
    seen: list[Generation] = []
    flow = flows.wait("g1", 60.0, seen.append, Policy(first_poll=0.5, clock=clock, stream=False))
    next(flow)
    assert flow.send(poll("queued")) == Sleep(0.5)
    next(flow)
    with pytest.raises(StopIteration) as stop:
        flow.send(poll("completed"))
    assert stop.value.value.status == "completed"
    assert [g.status for g in seen] == ["queued", "completed"]


def test_a_busy_poll_near_the_deadline_waits_only_the_time_left() -> None:
    """A Retry-After of 30 s with 2 s left: one sleep of 2 s, then ``Timeout``."""
    clock = FakeClock()
    flow = flows.wait("g1", 2.0, None, Policy(retry_cap=10.0, clock=clock, stream=False))
    next(flow)
    busy = Reply(503, {"retry-after": "30"}, b"")
    assert flow.send(busy) == Sleep(2.0)
    clock.now += 2.0
    assert isinstance(flow.send(None), Call)
    with pytest.raises(Timeout, match="deadline passed while retrying GET"):
        flow.send(busy)


def test_retry_after_as_an_http_date_is_honoured() -> None:
    flow = flows.request(Call("GET", "/x"), Policy(retry_cap=8.0, jitter=lambda: 1.0))
    next(flow)
    action = flow.send(Reply(503, {"retry-after": formatdate(time.time() + 10, usegmt=True)}, b""))
    assert isinstance(action, Sleep)
    assert 8.9 <= action.seconds <= 10.0  # the date has whole seconds


def test_a_wait_rides_out_a_restart_once_the_server_has_answered() -> None:
    """Refused polls after an answer get the full ``retries``: the server may be restarting."""
    refused = Failed(httpx.ConnectError("Connection refused"), sent=False)
    flow = flows.wait("g1", 60.0, None, Policy(retries=5, unreachable_retries=1, stream=False))
    assert isinstance(next(flow), Call)
    assert isinstance(flow.send(poll("generating")), Sleep)
    assert isinstance(flow.send(None), Call)
    for _ in range(4):  # more than unreachable_retries, fewer than retries
        assert isinstance(flow.send(refused), Sleep)
        assert isinstance(flow.send(None), Call)
    with pytest.raises(StopIteration) as stop:
        flow.send(poll("completed"))
    assert stop.value.value.status == "completed"


def test_a_first_poll_refused_is_given_up_on_after_the_unreachable_retries() -> None:
    refused = Failed(httpx.ConnectError("Connection refused"), sent=False)
    flow = flows.wait("g1", 60.0, None, Policy(retries=5, unreachable_retries=1, stream=False))
    assert isinstance(next(flow), Call)
    assert isinstance(flow.send(refused), Sleep)
    assert isinstance(flow.send(None), Call)
    with pytest.raises(TransportError, match="no connection after 2 tries"):
        flow.send(refused)
