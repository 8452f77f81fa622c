"""The engine interface every generator implements, and what crosses it besides ``Video``.

An engine is loaded once (``load``) and then turns a ``JobRequest`` and its decoded
``Keyframes`` into a ``Video``. ``on_step(done, total)`` reports progress in the engine's
own units (frames, denoising steps) and may raise ``reelforge.errors.Cancelled`` to stop the
work at the next step.

A ``RemoteEngine`` (the gateway to hosted providers) makes no frames: the worker submits the
request, keeps the provider's job id with the job, waits, and stores the finished MP4 the
provider made as it is, without encoding it again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from PIL import Image

from reelforge.request import JobRequest
from reelforge.video import Video

OnStep = Callable[[int, int], None]
"""``on_step(done, total)``: progress report; raising from it cancels the generation."""


@dataclass(frozen=True)
class Keyframes:
    """The request's images, decoded and checked (RGB, EXIF orientation applied)."""

    first: Image.Image | None = None
    last: Image.Image | None = None

    @property
    def any(self) -> Image.Image | None:
        """The image that sets the video's aspect: the first, else the last."""
        return self.first or self.last


def request_seed(request: JobRequest) -> int:
    """The request's seed, or one derived from its prompt (the same request, the same video)."""
    if request.seed is not None:
        return request.seed
    return int.from_bytes(hashlib.sha256(request.prompt.encode("utf-8")).digest()[:4], "big")


class Engine(Protocol):
    """A generator: ``load`` once per process, then ``generate`` many times.

    One engine serves one job at a time: a worker running N jobs at once loads N engines.
    """

    def load(self) -> None:
        """Load whatever the engine needs (weights, fonts); idempotent."""

    def generate(self, request: JobRequest, keyframes: Keyframes, on_step: OnStep) -> Video:
        """Make the video for ``request``, calling ``on_step`` as work progresses."""
        ...


@runtime_checkable
class RemoteEngine(Protocol):
    """A generator elsewhere: the provider makes a finished MP4 for a job id of its own.

    Every method may be called from many threads at once (one engine serves a whole pool of
    waiting jobs); ``on_step`` is called at least every second while one waits, so that a
    cancel, a drain or the job's time limit stop it (it raises). Failures are
    ``UpstreamRejected`` (the request's fault) or ``UpstreamFailed``; transient ones (429,
    5xx, network) are retried inside, with backoff.
    """

    fallback: str | None
    """Another served model id that takes the job when this one fails not by its fault."""

    def load(self) -> None:
        """Check what the engine needs (the provider key is set); idempotent."""

    def submit(self, request: JobRequest, keyframes: Keyframes, on_step: OnStep) -> str:
        """Start the job at the provider; its id there."""
        ...

    def fetch(self, upstream_id: str, target: Path, on_step: OnStep) -> None:
        """Wait for the provider's job ``upstream_id`` to finish, then write its MP4 to
        ``target`` (streamed; ``target``'s directory exists)."""
        ...

    def cancel(self, upstream_id: str) -> None:
        """Ask the provider to stop ``upstream_id``, where it can; never raises."""


AnyEngine = Engine | RemoteEngine
"""What a registry entry builds: a local generator or a hosted provider's gateway."""
