"""The gateway engine: a hosted video API makes the video (``engine = "upstream"``).

One engine per served model, shared by every job of the upstream pool's threads (its HTTP
clients are thread-safe and it keeps no per-job state). Each provider's wire is one module
(``aiml``, ``minimax``, ``openai``); this module does what they share: the key, retries with
backoff of transient failures (429, 5xx, network; bounded by the job's time limit through
``on_step``), polling at the provider's pace, and the streamed download.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final, Protocol, TypeVar

import httpx

from reelforge.engines.base import Keyframes, OnStep
from reelforge.engines.options import UpstreamOptions
from reelforge.engines.registry import ModelSpec
from reelforge.engines.upstream.aiml import AIML
from reelforge.engines.upstream.minimax import MiniMax
from reelforge.engines.upstream.openai import OpenAI
from reelforge.engines.upstream.wire import Poll, Transient
from reelforge.errors import UpstreamFailed
from reelforge.request import JobRequest

log = logging.getLogger("reelforge.upstream")
T = TypeVar("T")

MAX_PAUSE_SECONDS: Final = 30.0
"""The longest wait between two polls or two tries, unless the provider asks for longer."""
EXPECTED_SECONDS: Final = 120.0
"""A provider's job's expected length, for progress when the provider reports none."""
TICK_SECONDS: Final = 0.5
"""How often ``on_step`` is called while waiting (a cancel stops the wait within it)."""
CHUNK_BYTES: Final = 1 << 20


class Provider(Protocol):
    """One provider's wire (``wire`` sorts the failures of each call)."""

    def submit(
        self, client: httpx.Client, model: str, request: JobRequest, keyframes: Keyframes
    ) -> str: ...

    def poll(self, client: httpx.Client, upstream_id: str) -> Poll: ...

    def cancel(self, client: httpx.Client, upstream_id: str) -> None: ...


class UpstreamEngine:
    """``engines.base.RemoteEngine`` over one provider (its registry ``options``)."""

    def __init__(self, spec: ModelSpec) -> None:
        self.options = spec.options_as(UpstreamOptions)
        self.fallback = self.options.fallback
        providers: dict[str, Provider] = {
            "aiml": AIML(),
            "minimax": MiniMax(),
            "openai": OpenAI(self.options.base_url),
        }
        self.provider = providers[self.options.provider]
        self._client: httpx.Client | None = None
        self._bare: httpx.Client | None = None

    def load(self) -> None:
        """Read the key from ``api_key_env``; ``ValueError`` naming the variable if unset."""
        if self._client is not None:
            return
        key = os.environ.get(self.options.api_key_env)
        if not key:
            raise ValueError(f"the provider key variable {self.options.api_key_env} is not set")
        timeout = httpx.Timeout(self.options.request_timeout_seconds)
        hooks = {"response": [self._count]}
        self._client = httpx.Client(
            base_url=self.options.base_url,
            headers={"Authorization": f"Bearer {key}"},
            timeout=timeout,
            event_hooks=hooks,
        )
        # Signed URLs: the key never goes there.
        self._bare = httpx.Client(timeout=timeout, event_hooks=hooks)

    def _count(self, response: httpx.Response) -> None:
        """Each answer from the provider, in ``reelforge_upstream_calls_total`` (a call that
        got no answer is not counted: the job's retries and errors tell of those)."""
        from reelforge.metrics import process_metrics  # after serve set up its metrics folder

        outcome = "ok" if response.status_code < 400 else "error"
        process_metrics().upstream_calls.labels(self.options.provider, outcome).inc()

    def submit(self, request: JobRequest, keyframes: Keyframes, on_step: OnStep) -> str:
        client, model = self._clients()[0], self.options.model
        tick = _ticker(on_step, lambda: 0)
        return self._retrying(lambda: self.provider.submit(client, model, request, keyframes), tick)

    def fetch(self, upstream_id: str, target: Path, on_step: OnStep) -> None:
        """Poll until done (every ``poll_seconds`` at least, growing 1.5x to
        ``MAX_PAUSE_SECONDS``, longer if the provider asks), then stream the MP4 to ``target``;
        ``UpstreamFailed`` with the provider's message if its generation failed."""
        client = self._clients()[0]
        started, pause, progress = time.monotonic(), self.options.poll_seconds, 0
        tick = _ticker(on_step, lambda: progress)
        while True:
            poll = self._retrying(lambda: self.provider.poll(client, upstream_id), tick)
            if poll.failure is not None:
                raise UpstreamFailed(f"the provider's generation failed: {poll.failure}")
            if poll.done and poll.video is not None:
                break
            elapsed = time.monotonic() - started
            progress = min(95, poll.progress or int(elapsed * 100 / EXPECTED_SECONDS))
            _wait(max(pause, poll.after or 0.0), tick)
            pause = min(pause * 1.5, MAX_PAUSE_SECONDS)
        video = poll.video
        self._retrying(lambda: self._download(video, poll.signed, target, tick), tick)

    def cancel(self, upstream_id: str) -> None:
        try:
            self.provider.cancel(self._clients()[0], upstream_id)
        except Exception as exc:  # noqa: BLE001 (a cancel upstream is a courtesy)
            log.warning("cancelling %s at the provider failed: %s", upstream_id, exc)

    def _clients(self) -> tuple[httpx.Client, httpx.Client]:
        self.load()
        assert self._client is not None
        assert self._bare is not None
        return self._client, self._bare

    def _download(self, url: str, signed: bool, target: Path, tick: Callable[[], None]) -> None:
        client = self._clients()[1 if signed else 0]
        try:
            with client.stream("GET", url) as response:
                if response.status_code == 429 or response.status_code >= 500:
                    raise Transient(f"download: HTTP {response.status_code}")
                if response.status_code != 200:
                    raise UpstreamFailed(f"the provider's video: HTTP {response.status_code}")
                with target.open("wb") as out:
                    for chunk in response.iter_bytes(CHUNK_BYTES):
                        out.write(chunk)
                        tick()
        except httpx.TransportError as exc:
            raise Transient(f"download: {type(exc).__name__}") from None

    def _retrying(self, work: Callable[[], T], tick: Callable[[], None]) -> T:
        """``work()``, tried again after each ``Transient`` with a pause that doubles from
        ``poll_seconds`` to ``MAX_PAUSE_SECONDS`` (or what the provider asked), until
        ``tick`` raises (cancel, drain, time limit)."""
        pause = self.options.poll_seconds
        while True:
            try:
                return work()
            except Transient as exc:
                delay = max(pause, exc.after or 0.0)
                log.warning(
                    "provider %s: %s; trying again in %.1f s", self.options.provider, exc, delay
                )
                _wait(delay, tick)
                pause = min(pause * 2, MAX_PAUSE_SECONDS)


def _ticker(on_step: OnStep, progress: Callable[[], int]) -> Callable[[], None]:
    """``on_step`` with the current progress in percent."""
    return lambda: on_step(progress(), 100)


def _wait(seconds: float, tick: Callable[[], None]) -> None:
    """Sleep ``seconds``, calling ``tick`` every ``TICK_SECONDS`` (it may raise)."""
    end = time.monotonic() + seconds
    while True:
        tick()
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(TICK_SECONDS, left))
