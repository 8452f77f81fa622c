"""The engine interface every generator implements, and the values that cross it.

An engine is loaded once (``load``) and then turns a ``VideoRequest`` into a ``Video``.
``on_step(done, total)`` reports progress in the engine's own units (frames, denoising
steps) and may raise ``reelforge.errors.Cancelled`` to stop the work at the next step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from PIL import Image

from reelforge.contract import Resolution

OnStep = Callable[[int, int], None]
"""``on_step(done, total)``: progress report; raising from it cancels the generation."""

Frame = npt.NDArray[np.uint8]
"""One RGB frame, shape (height, width, 3), uint8."""


@dataclass(frozen=True)
class VideoRequest:
    """A validated request as an engine sees it: images decoded and checked, no wire details."""

    prompt: str
    duration_s: int
    resolution: Resolution
    seed: int | None = None
    """None: derived from the prompt, so the same request gives the same video."""
    first_frame: Image.Image | None = None
    last_frame: Image.Image | None = None
    prompt_optimizer: bool = True


@dataclass(frozen=True)
class Audio:
    """Audio to mux beside the frames: float32 samples in [-1, 1], shape (channels, samples)."""

    samples: npt.NDArray[np.float32]
    sample_rate: int


@dataclass(frozen=True)
class Video:
    """A clip ready for the encoder.

    ``frames`` yields exactly ``frame_count`` RGB frames of ``width`` x ``height``; it may
    produce them lazily (the preview engine renders each frame as the encoder asks for it),
    so it can be iterated once only. ``meta`` holds facts worth reporting (native size,
    fps, steps) as JSON-serialisable values.
    """

    width: int
    height: int
    fps: int
    frame_count: int
    frames: Iterator[Frame]
    audio: Audio | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    rendered: bool = False
    """True when the frames already exist (a model's output): encoding them is CPU work that
    may overlap the next generation. False when iterating renders them (the preview)."""

    @property
    def duration_s(self) -> float:
        return self.frame_count / self.fps


def request_seed(request: VideoRequest) -> int:
    """The request's seed, or one derived from its prompt (the same request, the same video)."""
    if request.seed is not None:
        return request.seed
    return int.from_bytes(hashlib.sha256(request.prompt.encode("utf-8")).digest()[:4], "big")


class Engine(Protocol):
    """A generator: ``load`` once per process, then ``generate`` many times."""

    def load(self) -> None:
        """Load whatever the engine needs (weights, fonts); idempotent."""

    def generate(self, request: VideoRequest, on_step: OnStep) -> Video:
        """Make the video for ``request``, calling ``on_step`` as work progresses."""
        ...
