"""The values a generated clip is made of: frames, audio and the ``Video`` the encoder takes.

Neutral ground: engines make these, ``media.encoder`` consumes them; neither imports the
other.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

Frame = npt.NDArray[np.uint8]
"""One RGB frame, shape (height, width, 3), uint8."""


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
