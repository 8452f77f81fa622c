"""The SDK's logic, written once and free of I/O.

Each operation is a generator ("flow") that yields actions — an HTTP call, a sleep, a
download into a file — and receives their outcomes; ``Client`` and ``AsyncClient`` only
carry the actions out (sync or async). Retries, backoff, deadlines, Range resumes and
error mapping all live here.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar

from reelforge.client import sse
from reelforge.client.errors import ApiError, GenerationFailed, Timeout, TransportError
from reelforge.client.models import Generation, Page
from reelforge.contract import Status

T = TypeVar("T")

LEGACY = "/generate/video/minimax/generation"
EVENTS = LEGACY + "/events"
"""reelforge's live stream of a generation (server-sent events)."""


@dataclass(frozen=True)
class Call:
    """An HTTP request relative to the base URL. ``idempotent``: safe to send twice.
    ``gone_ok``: a 404 to a resend means an earlier send did it (a delete)."""

    method: str
    path: str
    params: Mapping[str, str] | None = None
    body: Mapping[str, Any] | None = None
    idempotent: bool = True
    gone_ok: bool = False


@dataclass(frozen=True)
class Sleep:
    seconds: float


@dataclass(frozen=True)
class Fetch:
    """Stream ``url`` into ``path``: from byte ``offset`` (a Range request) when above 0."""

    url: str
    path: Path
    offset: int


@dataclass(frozen=True)
class Listen:
    """Open a server-sent event stream: GET ``path`` asking for ``text/event-stream``, with
    ``Last-Event-ID`` when given; a read that waits ``silence`` seconds fails. Answered with
    ``Opened``, a ``Reply`` (whole) when the answer is not a stream, or ``Failed``. A stream
    stays open until the next ``Listen`` or the end of the operation."""

    path: str
    params: Mapping[str, str]
    last_event_id: str | None
    silence: float


@dataclass(frozen=True)
class ReadLine:
    """The open stream's next line: ``Line``, or ``Failed`` when the connection dropped or
    stayed silent too long."""


@dataclass(frozen=True)
class Opened:
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Line:
    """A line of the stream without its end; None once the server ended the stream."""

    text: str | None


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class Streamed:
    """A download's outcome: ``path`` now holds the body (from 0 on a 200, appended on a
    206); ``complete`` is False when the connection dropped part-way."""

    status: int
    headers: Mapping[str, str]
    complete: bool


@dataclass(frozen=True)
class Failed:
    """The request failed in transport; ``sent``: it may have reached the server."""

    error: Exception
    sent: bool


Action = Call | Sleep | Fetch | Listen | ReadLine
Outcome = Reply | Streamed | Failed | Opened | Line | None
Flow = Generator[Action, Outcome, T]
Listing = Generator[Action | Generation, Outcome, None]
"""A flow that also yields results one by one: each ``Generation`` is handed to the caller
(and answered with None) as it comes, between the actions that fetch them."""


@dataclass(frozen=True)
class Policy:
    """Retry and polling pacing, in seconds.

    ``retries``: how often a call is sent again after a network error, a 5xx or a 429.
    ``unreachable_retries``: how often after a refused connection (nothing reached the
    server) before the server has answered once in the operation: a stopped server is
    reported within about a second and a half, not after the whole backoff (about 15 s).
    """

    retries: int = 5
    unreachable_retries: int = 2
    retry_base: float = 0.5
    retry_cap: float = 8.0
    first_poll: float = 0.5
    poll_growth: float = 1.5
    poll_cap: float = 10.0
    stream: bool = True
    """``wait`` follows the server's live stream where it has one (else it polls)."""
    stream_silence: float = 45.0
    """A stream silent this long (three missed heartbeats) is dropped and resumed."""
    clock: Callable[[], float] = field(default=time.monotonic)
    jitter: Callable[[], float] = field(default=lambda: random.uniform(0.5, 1.0))


def create(body: Mapping[str, Any], policy: Policy) -> Flow[Generation]:
    """POST a create; sent again only where it cannot have been processed."""
    reply = yield from request(Call("POST", LEGACY, body=body, idempotent=False), policy)
    return Generation.from_wire(_json(reply))


def get(
    generation_id: str, policy: Policy, deadline: float | None = None, *, reached: bool = False
) -> Flow[Generation]:
    """Poll once (``reached`` as for ``request``)."""
    call = Call("GET", LEGACY, params={"generation_id": generation_id})
    reply = yield from request(call, policy, deadline, reached=reached)
    return Generation.from_wire(_json(reply))


def cancel(generation_id: str, policy: Policy) -> Flow[Generation]:
    """Ask reelforge to cancel (its extension; safe to send twice)."""
    call = Call("DELETE", LEGACY, params={"generation_id": generation_id})
    reply = yield from request(call, policy)
    return Generation.from_wire(_json(reply))


def delete(generation_id: str, policy: Policy) -> Flow[None]:
    """Delete a generation with its video and inputs (reelforge's extension, ``purge``),
    cancelling it first if it has not ended."""
    params = {"generation_id": generation_id, "purge": "true"}
    yield from request(Call("DELETE", LEGACY, params=params, gone_ok=True), policy)


def list_page(after: str | None, limit: int, policy: Policy) -> Flow[Page]:
    """One page of the key's generations, newest first (reelforge's extension): ``limit``
    (1..100) of those older than the generation ``after``, or the newest without it."""
    params = {"limit": str(limit)} | ({} if after is None else {"after": after})
    reply = yield from request(Call("GET", LEGACY, params=params), policy)
    return Page.from_wire(_json(reply))


def listing(after: str | None, limit: int, policy: Policy) -> Listing:
    """Every generation older than ``after`` (all without it), newest first, fetched ``limit``
    a page as the caller takes them."""
    while True:
        page = yield from list_page(after, limit, policy)
        yield from page.data
        if not page.has_more or page.last_id is None:
            return
        after = page.last_id


def wait(
    generation_id: str,
    timeout: float,
    on_progress: Callable[[Generation], None] | None,
    policy: Policy,
) -> Flow[Generation]:
    """Follow the generation's live stream until it ends, or poll where the server has no
    stream (an older server, a proxy, its limit reached): a short first interval growing to
    a cap, never a sleep past the deadline. ``GenerationFailed`` on ``error``, ``Timeout`` at
    the deadline."""
    deadline = policy.clock() + timeout
    followed = None
    if policy.stream:
        followed = yield from follow(generation_id, deadline, on_progress, policy)
    if followed is not None:
        return _ended(followed)
    interval = policy.first_poll
    answered = False  # once the server has answered, a refused poll is a restart
    while True:
        generation = yield from get(generation_id, policy, deadline, reached=answered)
        answered = True
        if on_progress is not None:
            on_progress(generation)
        if generation.done:
            return _ended(generation)
        remaining = deadline - policy.clock()
        if remaining <= 0:
            raise Timeout(f"generation {generation_id} still {generation.status} after {timeout} s")
        yield Sleep(min(interval, remaining))
        interval = min(interval * policy.poll_growth, policy.poll_cap)


def follow(
    generation_id: str,
    deadline: float,
    on_progress: Callable[[Generation], None] | None,
    policy: Policy,
) -> Flow[Generation | None]:
    """The generation once the live stream shows it ended, calling ``on_progress`` on each
    event; None where the server offers no stream (the caller polls instead). A dropped or
    silent stream is opened again with ``Last-Event-ID`` (nothing is shown twice), after a
    backoff; after ``policy.retries`` drops in a row without an event, or an event that is not
    a generation, None."""
    parser, drops, seen = sse.Parser(), 0, "no event"
    params = {"generation_id": generation_id}
    while True:
        remaining = deadline - policy.clock()
        if remaining <= 0:
            raise Timeout(f"generation {generation_id}: deadline passed ({seen})")
        silence = min(policy.stream_silence, remaining)
        opened = yield Listen(EVENTS, params, parser.last_id, silence)
        if not isinstance(opened, Opened):
            return None
        while isinstance(line := (yield ReadLine()), Line) and line.text is not None:
            event = parser.feed(line.text)
            if event is None or event.event != "generation":
                continue
            try:
                generation, drops = Generation.from_wire(json.loads(event.data)), 0
            except (ValueError, AttributeError):
                return None  # not reelforge's stream: poll instead
            seen = f"still {generation.status}"
            if on_progress is not None:
                on_progress(generation)
            if generation.done:
                return generation
        drops += 1
        if drops > policy.retries:
            return None
        yield Sleep(_before(deadline, _backoff(drops, policy), policy, f"the stream ({seen})"))


def _ended(generation: Generation) -> Generation:
    """``generation`` if it completed; ``GenerationFailed`` if it ended in error."""
    if generation.status is Status.ERROR:
        name, message = generation.error_name or "Error", generation.error_message or ""
        raise GenerationFailed(generation.id, name, message)
    return generation


def generate(
    body: Mapping[str, Any],
    timeout: float,
    on_progress: Callable[[Generation], None] | None,
    output: Path | None,
    policy: Policy,
) -> Flow[Generation]:
    """Create, wait, and download to ``output`` if given."""
    created = yield from create(body, policy)
    generation = yield from wait(created.id, timeout, on_progress, policy)
    if output is not None:
        yield from download(generation, output, policy)
    return generation


def download(generation: Generation, path: Path, policy: Policy) -> Flow[Path]:
    """Stream the video to ``path`` (through ``<path>.part``), resuming with Range after a
    dropped connection and checking the size; a link that expired meanwhile is renewed (up to
    ``policy.retries`` times, then its 410 is an ``ApiError``)."""
    if generation.video_url is None:
        raise ValueError(f"generation {generation.id} has no video (status {generation.status})")
    url = generation.video_url
    part = path.with_name(path.name + ".part")
    part.unlink(missing_ok=True)
    try:
        failures = renewals = 0
        while True:
            offset = part.stat().st_size if part.exists() else 0
            outcome = yield Fetch(url, part, offset)
            if (
                isinstance(outcome, Streamed)
                and outcome.status == 410
                and renewals < policy.retries
            ):
                renewals += 1
                url = (yield from get(generation.id, policy, reached=True)).video_url or url
                continue
            if isinstance(outcome, Streamed) and outcome.complete and outcome.status in (200, 206):
                total = _total_size(outcome)
                if total is None or part.stat().st_size == total:
                    part.replace(path)
                    return path
                if part.stat().st_size > total:
                    part.unlink()  # not the file the server describes: start over
            elif isinstance(outcome, Streamed) and outcome.status == 416:
                part.unlink()  # our offset is past the file's end: start over
            elif isinstance(outcome, Streamed) and not outcome.complete:
                pass  # dropped mid-body: resume from what arrived
            elif isinstance(outcome, Streamed):
                raise ApiError(
                    outcome.status, "DownloadRefused", f"the video link answered {outcome.status}"
                )
            failures += 1
            if failures > policy.retries:
                raise TransportError(
                    f"download of {generation.id} failed {failures} times; last: {outcome}"
                )
            yield Sleep(_backoff(failures, policy))
    except BaseException:
        part.unlink(missing_ok=True)  # nothing half-downloaded is left behind
        raise


def request(
    call: Call, policy: Policy, deadline: float | None = None, *, reached: bool = False
) -> Flow[Reply]:
    """Send ``call``, retrying transport failures and 5xx/429 with jittered backoff (or the
    server's ``Retry-After``); a 4xx is an ``ApiError``. ``reached``: the server answered
    earlier in this operation, so refused connections are a restart to ride out and get the
    full ``policy.retries``; otherwise only ``policy.unreachable_retries``."""
    last, refusals = "", 0
    acted = False  # an earlier send may have reached the server and been carried out
    for attempt in range(1, policy.retries + 2):
        outcome = yield call
        if isinstance(outcome, Reply) and outcome.status < 500 and outcome.status != 429:
            return _final(outcome, gone_ok=call.gone_ok and acted)
        if isinstance(outcome, Failed):
            last = f"{type(outcome.error).__name__}: {outcome.error}"
            if outcome.sent and not call.idempotent:
                raise TransportError(f"{call.method} {call.path} may not have completed: {last}")
            acted, refusals = acted or outcome.sent, refusals + (not outcome.sent)
            if not reached and refusals > policy.unreachable_retries:
                raise TransportError(f"no connection after {refusals} tries; last: {last}")
            delay = _backoff(attempt, policy)
        elif isinstance(outcome, Reply):
            last = f"HTTP {outcome.status}"
            if not call.idempotent and outcome.status not in (429, 503):
                raise _api_error(outcome)  # the server may have acted on it: not sent again
            acted = acted or outcome.status != 429
            told = _retry_after(outcome.headers, policy)
            delay = _backoff(attempt, policy) if told is None else told
        else:
            raise TypeError(f"unexpected outcome {outcome!r}")
        pause = _before(deadline, delay, policy, f"{call.method} {call.path} ({last})")
        if attempt <= policy.retries:
            yield Sleep(pause)
    raise TransportError(
        f"{call.method} {call.path} failed {policy.retries + 1} times; last: {last}"
    )


def _final(reply: Reply, *, gone_ok: bool) -> Reply:
    """A final answer (below 500, not 429): the reply, or its ``ApiError`` for a 4xx; with
    ``gone_ok``, a 404 is the reply too (an earlier send did what was asked)."""
    if reply.status < 400 or (reply.status == 404 and gone_ok):
        return reply
    raise _api_error(reply)


def _before(deadline: float | None, delay: float, policy: Policy, retrying: str) -> float:
    """``delay`` seconds, cut to the time left before ``deadline``; ``Timeout`` if none is."""
    if deadline is None:
        return delay
    remaining = deadline - policy.clock()
    if remaining <= 0:
        raise Timeout(f"deadline passed while retrying {retrying}")
    return min(delay, remaining)


def _json(reply: Reply) -> dict[str, Any]:
    try:
        body = json.loads(reply.body)
    except ValueError as exc:
        raise TransportError(f"the server answered {reply.status} with non-JSON") from exc
    if not isinstance(body, dict):
        raise TransportError(f"the server answered {reply.status} with {type(body).__name__}")
    return body


def _api_error(reply: Reply) -> ApiError:
    try:
        error = json.loads(reply.body).get("error") or {}
        return ApiError(
            reply.status, str(error.get("name", "Error")), str(error.get("message", ""))
        )
    except (ValueError, AttributeError):
        return ApiError(reply.status, "Error", reply.body[:200].decode("utf-8", "replace"))


def _backoff(attempt: int, policy: Policy) -> float:
    delay = min(policy.retry_cap, policy.retry_base * 2.0 ** (attempt - 1))
    return float(delay * policy.jitter())


def _retry_after(headers: Mapping[str, str], policy: Policy) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return min(policy.retry_cap * 4, max(0.0, float(value)))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return min(policy.retry_cap * 4, max(0.0, moment - time.time()))


def _total_size(outcome: Streamed) -> int | None:
    """The whole file's size as the server states it (Content-Range, else Content-Length)."""
    content_range = outcome.headers.get("content-range", "")
    if "/" in content_range and content_range.rsplit("/", 1)[1].isdigit():
        return int(content_range.rsplit("/", 1)[1])
    length = outcome.headers.get("content-length", "")
    return int(length) if outcome.status == 200 and length.isdigit() else None
