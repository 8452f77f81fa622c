"""A transition between two pictures along dense optical flow (OpenCV DIS), seen through a
moving camera.

Everything that does not change along the way is computed once per pair: the flow both ways
(at ``_FLOW_WIDTH``), how far each pixel's flow can be trusted, and when each pixel switches
from one end to the other. For each in-between frame, each end's pixels are pushed
(splatted) along their flow to where they are at that moment (faster-moving pixels in
front), giving for every output pixel the place in each end to sample from, planned on a
coarse grid with the camera's affine folded in; each end is then resampled once, at half
size, and the blend enlarged (near either end, the sharp end picture fades in).

Where the flows agree both ways and the pixels they pair look alike, the content is the same
thing moving: the two warped ends are blended in proportion to the way along. Elsewhere (an
object in one picture only, unrelated pictures) a blend would show both pictures at half
strength, doubled objects and ghosts: there each pixel switches from the first picture to
the last within a short window, so that at any moment most pixels show one picture or the
other, and what stands out in the first picture leaves before what stands out in the last
one arrives.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from reelforge.video import Frame

FloatArray = npt.NDArray[np.float32]

_FLOW_WIDTH = 320
"""Width, in pixels, at which the flow is measured."""
_PLAN_WIDTH = 128
"""Width, in pixels, of the grid on which each frame's sampling positions and blend are
planned (then enlarged: they vary smoothly)."""
_AGREEMENT = 1.5
"""Forward-backward flow disagreement, in flow-scale pixels, at which trust falls to 1/e."""
_LIKENESS = 24.0
"""Grey-level difference of two paired pixels at which trust falls to 1/e."""
_SWITCH_SPREAD = 0.3
"""How far switch times spread around the middle (0.5 ± this), as a share of the way."""
_SWITCH_WINDOW = 0.3
"""How long one pixel takes to switch, as a share of the way."""
_SHARP_SPAN = 0.03
"""Share of the way, from either end, over which the sharp end picture fades out (the frames
in between are made at half size and enlarged)."""


class Morph:
    """In-between frames from ``start`` to ``end`` (RGB frames of the same size; ``height``
    is theirs, in pixels)."""

    def __init__(self, start: Frame, end: Frame) -> None:
        if start.shape != end.shape:
            raise ValueError(f"morph ends differ in shape: {start.shape} vs {end.shape}")
        # Four channels: OpenCV's remap and warpAffine run several times faster on them.
        self._start, self._end = (cv2.cvtColor(f, cv2.COLOR_RGB2RGBA) for f in (start, end))
        height, width = start.shape[:2]
        self.height = height
        half = (max(1, (width + 1) // 2), max(1, (height + 1) // 2))
        self._halves = tuple(
            cv2.resize(f, half, interpolation=cv2.INTER_AREA) for f in (self._start, self._end)
        )
        # The flow both ways, measured at ``_FLOW_WIDTH``; its trust and the switch times.
        scale = min(1.0, _FLOW_WIDTH / width)
        small = (max(8, round(width * scale)), max(8, round(height * scale)))
        grey = [
            cv2.cvtColor(cv2.resize(f, small, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
            for f in (start, end)
        ]
        dis = cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        forward, backward = dis.calc(grey[0], grey[1], None), dis.calc(grey[1], grey[0], None)
        trust = (_trust(forward, backward, *grey), _trust(backward, forward, *grey[::-1]))
        # All of it on the coarser grid the frames are planned on.
        self._scale = min(1.0, _PLAN_WIDTH / width)
        plan = (max(4, round(width * self._scale)), max(4, round(height * self._scale)))
        ratio = np.array([plan[0] / small[0], plan[1] / small[1]], np.float32)

        def coarse(field: FloatArray) -> FloatArray:
            coarser: FloatArray = cv2.resize(field, plan, interpolation=cv2.INTER_AREA)
            return coarser

        self._forward, self._backward = (_Splat(coarse(f) * ratio) for f in (forward, backward))
        self._trust = (coarse(trust[0]), coarse(trust[1]))
        self._switch = coarse(_switch_times(*grey))

    def frame(
        self, alpha: float, camera: npt.NDArray[np.floating], width: int, height: int
    ) -> Frame:
        """The picture ``alpha`` of the way from start (0.0) to end (1.0), ``width`` x
        ``height`` px, seen through ``camera``: the 2x3 matrix that maps output pixels to the
        ends' pixels."""
        if alpha <= 0.0 or alpha >= 1.0:
            return look(self._start if alpha <= 0.0 else self._end, camera, width, height)
        # Where each output pixel sits on the plan grid of the ends' frame at ``alpha``.
        view = self._small_view(camera.astype(np.float32), width, height)
        # A pixel moves along its flow only as far as the flow is trusted.
        from_start = _sample(self._forward.sources(alpha), view)
        from_end = _sample(self._backward.sources(1.0 - alpha), view)
        trust_start = _sample(self._trust[0], from_start)
        trust_end = _sample(self._trust[1], from_end)
        from_start = view + trust_start[..., None] * (from_start - view)
        from_end = view + trust_end[..., None] * (from_end - view)
        trust = trust_start * trust_end
        switch = _sample(self._switch, view)
        ramp = np.clip((alpha - switch) / _SWITCH_WINDOW + 0.5, 0.0, 1.0)
        weight = trust * np.float32(alpha) + (1 - trust) * ramp * ramp * (3 - 2 * ramp)
        # At half size: each end resampled once, blended, enlarged; near either end, the
        # sharp end picture is faded in, so that the clip's detail comes and goes smoothly.
        half = (max(1, (width + 1) // 2), max(1, (height + 1) // 2))
        start = self._resample(self._halves[0], from_start, half)
        end = self._resample(self._halves[1], from_end, half)
        weight = cv2.resize(weight, half, interpolation=cv2.INTER_LINEAR)
        blended = cv2.cvtColor(
            cv2.blendLinear(start, end, 1.0 - weight, weight), cv2.COLOR_RGBA2RGB
        )
        frame: Frame = cv2.resize(blended, (width, height), interpolation=cv2.INTER_LINEAR)
        sharp = 1.0 - min(alpha, 1.0 - alpha) / _SHARP_SPAN
        if sharp > 0.0:
            nearer = look(self._start if alpha < 0.5 else self._end, camera, width, height)
            frame = cv2.addWeighted(nearer, sharp, frame, 1.0 - sharp, 0.0)
        return frame

    def _small_view(self, camera: FloatArray, width: int, height: int) -> FloatArray:
        """For a coarse grid over the output (about ``_PLAN_WIDTH`` wide), the position on the
        plan grid each of its points looks at (pixel centres aligned as ``cv2.resize`` does)."""
        columns, rows = max(2, round(width * self._scale)), max(2, round(height * self._scale))
        xs = (np.arange(columns, dtype=np.float32) + 0.5) * (width / columns) - 0.5
        ys = (np.arange(rows, dtype=np.float32) + 0.5) * (height / rows) - 0.5
        grid_x, grid_y = np.meshgrid(xs, ys)
        scale = np.float32(self._scale)
        view_x = camera[0, 0] * grid_x + camera[0, 1] * grid_y + camera[0, 2]
        view_y = camera[1, 0] * grid_x + camera[1, 1] * grid_y + camera[1, 2]
        return np.dstack([(view_x + 0.5) * scale - 0.5, (view_y + 0.5) * scale - 0.5])

    def _resample(self, half: Frame, small: FloatArray, size: tuple[int, int]) -> Frame:
        """The half-size picture ``half`` sampled at the small-scale positions ``small``,
        enlarged to ``size`` (the change of scale is affine, so it commutes with the bilinear
        enlargement)."""
        height, width = self._start.shape[:2]
        shrink = np.array([half.shape[1] / width, half.shape[0] / height], np.float32)
        positions = (small + 0.5) * (shrink / np.float32(self._scale)) - 0.5
        grid = cv2.resize(positions, size, interpolation=cv2.INTER_LINEAR)
        resampled: Frame = cv2.remap(
            half, grid, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
        )
        return resampled


def look(picture: Frame, camera: npt.NDArray[np.floating], width: int, height: int) -> Frame:
    """The RGBA ``picture`` seen through ``camera`` (output pixels → picture pixels), as RGB."""
    looked: Frame = cv2.warpAffine(
        picture,
        camera,
        (width, height),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REFLECT_101,
    )
    rgb: Frame = cv2.cvtColor(looked, cv2.COLOR_RGBA2RGB)
    return rgb


def _sample(field: FloatArray, at: FloatArray) -> FloatArray:
    """``field`` read at the positions ``at`` (pixels of the same grid), bilinearly."""
    sampled: FloatArray = cv2.remap(
        field, at, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return sampled


def _trust(
    flow: FloatArray, back: FloatArray, grey: npt.NDArray[np.uint8], other: npt.NDArray[np.uint8]
) -> FloatArray:
    """How much each pixel's ``flow`` can be trusted (0..1): the flow ``back`` from where it
    lands returns it home, and the pixel it lands on looks like it."""
    height, width = flow.shape[:2]
    grid = np.dstack(
        np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    )
    landing = grid + flow
    returned = flow + _sample(back, landing)
    disagreement = np.hypot(returned[..., 0], returned[..., 1]) / _AGREEMENT
    unlike = (grey.astype(np.float32) - _sample(other.astype(np.float32), landing)) / _LIKENESS
    trust = np.exp(-(disagreement**2) - unlike**2).astype(np.float32)
    smooth: FloatArray = cv2.GaussianBlur(trust, (0, 0), 1.5)
    return smooth


def _switch_times(start: npt.NDArray[np.uint8], end: npt.NDArray[np.uint8]) -> FloatArray:
    """When each pixel switches from start to end (0..1), spread about the middle: early
    where the start stands out from its surroundings more than the end does (its objects
    leave first), late where the end stands out more (its objects arrive last), so that the
    two pictures' objects are never both on show."""
    broad = max(2.0, start.shape[1] / 64)
    standing_out = [
        cv2.GaussianBlur(cv2.absdiff(g, cv2.GaussianBlur(g, (0, 0), 8 * broad)), (0, 0), broad)
        for g in (start.astype(np.float32), end.astype(np.float32))
    ]
    lead = standing_out[1] - standing_out[0]
    times: FloatArray = 0.5 + _SWITCH_SPREAD * np.tanh(lead / (float(np.std(lead)) + 1e-3))
    return times.astype(np.float32)


class _Splat:
    """Forward splatting of one flow field (in pixels of its grid)."""

    def __init__(self, flow: FloatArray) -> None:
        height, width = flow.shape[:2]
        grid_x, grid_y = np.meshgrid(
            np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)
        )
        self._grid = np.stack([grid_x, grid_y], axis=-1)
        self._flow = flow
        # Writes in order of speed: where two pixels land together, the faster one (in front) wins.
        order = np.argsort(np.hypot(flow[..., 0], flow[..., 1]), axis=None, kind="stable")
        self._from = self._grid.reshape(-1, 2)[order]
        self._moves = flow.reshape(-1, 2)[order]

    def sources(self, alpha: float) -> FloatArray:
        """For each pixel at time ``alpha``, where it was at time 0, shape (h, w, 2)."""
        height, width = self._flow.shape[:2]
        # Holes (nothing lands there) fall back to sampling along the flow found at the pixel.
        sources: FloatArray = self._grid - np.float32(alpha) * self._flow
        landing = np.rint(self._from + np.float32(alpha) * self._moves).astype(np.intp)
        tx = np.clip(landing[:, 0], 0, width - 1)
        ty = np.clip(landing[:, 1], 0, height - 1)
        sources.reshape(-1, 2)[ty * width + tx] = self._from
        return sources
