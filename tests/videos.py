"""Reading MP4s back with PyAV and measuring the motion between two frames."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image

Frame = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Probe:
    codec: str
    pix_fmt: str
    width: int
    height: int
    fps: float
    frames: list[Frame]


def probe(path: Path) -> Probe:
    """Decode every frame of ``path`` (RGB) with the stream's facts."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [
            np.asarray(f.to_ndarray(format="rgb24"), np.uint8) for f in container.decode(stream)
        ]
        context = stream.codec_context
        return Probe(
            codec=context.name,
            pix_fmt=str(context.pix_fmt),
            width=stream.width,
            height=stream.height,
            fps=float(stream.average_rate or 0),
            frames=frames,
        )


def mae(a: npt.ArrayLike | Image.Image, b: npt.ArrayLike | Image.Image) -> float:
    """Mean absolute error of two pictures, in 0..255 levels."""
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).mean())


@dataclass(frozen=True)
class Motion:
    """How content moved from one frame to another: ``dx``, ``dy`` in pixels of the frame
    (positive: right, down) and ``scale`` (>1: content grew) about the frame's centre."""

    dx: float
    dy: float
    scale: float


def motion(before: Frame, after: Frame) -> Motion:
    """A similarity fit (no rotation) to the dense DIS optical flow from ``before`` to ``after``."""
    height, width = before.shape[:2]
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in (before, after)]
    flow = cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(grey[0], grey[1], None)
    margin = height // 8  # the border may hold reflected content
    ys, xs = np.mgrid[margin : height - margin : 4, margin : width - margin : 4]
    fx = flow[ys, xs, 0].astype(np.float64)
    fy = flow[ys, xs, 1].astype(np.float64)
    px, py = xs - width / 2, ys - height / 2
    px, py = px - px.mean(), py - py.mean()
    tx, ty = fx.mean(), fy.mean()
    scale = 1 + float(((fx - tx) * px + (fy - ty) * py).sum() / (px * px + py * py).sum())
    return Motion(dx=float(tx), dy=float(ty), scale=scale)
