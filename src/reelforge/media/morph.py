"""A transition between two pictures along dense optical flow (OpenCV DIS).

The flow is measured once, both ways, at a reduced scale. For each in-between frame, each
end's pixels are pushed (splatted) along their flow to where they are at that moment —
faster-moving pixels in front, where they meet — giving for every output pixel the place
in each end picture to sample from. Both ends are warped that way and blended, so shapes
travel into place instead of fading through each other.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from reelforge.video import Frame

FloatArray = npt.NDArray[np.float32]

_FLOW_WIDTH = 320
"""Width, in pixels, at which the flow is measured and splatted."""


class Morph:
    """In-between frames from ``start`` to ``end`` (RGB frames of the same size)."""

    def __init__(self, start: Frame, end: Frame) -> None:
        if start.shape != end.shape:
            raise ValueError(f"morph ends differ in shape: {start.shape} vs {end.shape}")
        self._start, self._end = start, end
        height, width = start.shape[:2]
        self._scale = min(1.0, _FLOW_WIDTH / width)
        small = (max(8, round(width * self._scale)), max(8, round(height * self._scale)))
        grey = [
            cv2.cvtColor(cv2.resize(f, small, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
            for f in (start, end)
        ]
        dis = cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        self._forward = _Splat(dis.calc(grey[0], grey[1], None))
        self._backward = _Splat(dis.calc(grey[1], grey[0], None))

    def frame(self, alpha: float) -> Frame:
        """The picture ``alpha`` of the way from start (0.0) to end (1.0)."""
        if alpha <= 0.0:
            return self._start
        if alpha >= 1.0:
            return self._end
        from_start = self._warp(self._start, self._forward.sources(alpha))
        from_end = self._warp(self._end, self._backward.sources(1.0 - alpha))
        blended: Frame = cv2.addWeighted(from_start, 1 - alpha, from_end, alpha, 0.0)
        return blended

    def _warp(self, picture: Frame, sources: FloatArray) -> Frame:
        height, width = picture.shape[:2]
        full = cv2.resize(sources / self._scale, (width, height), interpolation=cv2.INTER_LINEAR)
        warped: Frame = cv2.remap(
            picture, full, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        return warped


class _Splat:
    """Forward splatting of one flow field (in small-scale pixels)."""

    def __init__(self, flow: FloatArray) -> None:
        height, width = flow.shape[:2]
        grid_x, grid_y = np.meshgrid(
            np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)
        )
        self._grid = np.stack([grid_x, grid_y], axis=-1)
        self._flow = flow
        # Writes in order of speed: where two pixels land together, the faster one (in front) wins.
        order = np.argsort(np.hypot(flow[..., 0], flow[..., 1]), axis=None, kind="stable")
        self._order = np.unravel_index(order, (height, width))

    def sources(self, alpha: float) -> FloatArray:
        """For each pixel at time ``alpha``, where it was at time 0, shape (h, w, 2)."""
        height, width = self._flow.shape[:2]
        step = np.float32(alpha)
        # Holes (nothing lands there) fall back to sampling along the flow found at the pixel.
        sources: FloatArray = self._grid - step * self._flow
        ys, xs = self._order
        landing = self._grid[ys, xs] + step * self._flow[ys, xs]
        tx = np.clip(np.rint(landing[:, 0]).astype(np.intp), 0, width - 1)
        ty = np.clip(np.rint(landing[:, 1]).astype(np.intp), 0, height - 1)
        sources[ty, tx] = self._grid[ys, xs]
        return sources
