"""A tiny real engine for tests of what happens around a generation (leases, retries,
storage): eight grey 64x64 frames, each reported, rendered in milliseconds."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from reelforge.engines.base import Keyframes, OnStep
from reelforge.request import JobRequest
from reelforge.video import Frame, Video

FRAMES = 8


class StillEngine:
    def load(self) -> None:
        """Nothing to load."""

    def generate(self, request: JobRequest, keyframes: Keyframes, on_step: OnStep) -> Video:
        def frames() -> Iterator[Frame]:
            for index in range(FRAMES):
                on_step(index + 1, FRAMES)
                yield np.full((64, 64, 3), 128, np.uint8)

        return Video(width=64, height=64, fps=25, frame_count=FRAMES, frames=frames())
