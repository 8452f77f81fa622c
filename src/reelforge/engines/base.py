"""The engine interface every generator implements, and what crosses it besides ``Video``.

An engine is loaded once (``load``) and then turns a ``JobRequest`` and its decoded
``Keyframes`` into a ``Video``. ``on_step(done, total)`` reports progress in the engine's
own units (frames, denoising steps) and may raise ``reelforge.errors.Cancelled`` to stop the
work at the next step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

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
