"""What the camera sees past a picture's edges.

A camera pulling back from a given first frame must show more than the picture holds. The
picture is extended outward by mirroring it, and the mirror is blurred with distance from
the edge: sharp where it joins the picture (no seam), soft further out, as a shallow depth
of field would show it. The picture itself is never changed.
"""

from __future__ import annotations

from typing import Final

import cv2
import numpy as np
import numpy.typing as npt

Frame = npt.NDArray[np.uint8]

BLUR_DOWNSCALE: Final = 8
"""The blur works on the extension shrunk by this factor (cheap, and soft enough)."""
BLUR_SIGMA: Final = 3.0
"""Gaussian sigma of the blur, in shrunk pixels."""
FEATHER: Final = 0.06
"""Distance from the edge over which the mirror turns soft, as a share of the shorter side."""


class Surround:
    """Extends ``width`` x ``height`` pictures by ``pad`` pixels on every side."""

    def __init__(self, width: int, height: int, pad: int) -> None:
        if pad < 1:
            raise ValueError(f"pad must be at least 1 pixel, got {pad}")
        self.width, self.height, self.pad = width, height, pad
        # Weight of the blurred mirror: 0 on the picture, rising smoothly to 1 with distance.
        rows, columns = np.arange(height + 2 * pad) - pad, np.arange(width + 2 * pad) - pad
        dy = np.maximum(np.maximum(-rows, rows - (height - 1)), 0)
        dx = np.maximum(np.maximum(-columns, columns - (width - 1)), 0)
        ramp = np.clip(np.hypot(dy[:, None], dx[None, :]) / (FEATHER * min(width, height)), 0, 1)
        self._soft = (ramp * ramp * (3 - 2 * ramp)).astype(np.float32)[..., None]

    def extend(self, picture: Frame) -> Frame:
        """``picture`` in the middle of a canvas ``pad`` pixels larger on every side."""
        if picture.shape[:2] != (self.height, self.width):
            raise ValueError(f"expected a {self.width}x{self.height} picture")
        pad = self.pad
        mirrored = cv2.copyMakeBorder(picture, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
        size = (mirrored.shape[1], mirrored.shape[0])
        small = cv2.resize(
            mirrored,
            (max(1, size[0] // BLUR_DOWNSCALE), max(1, size[1] // BLUR_DOWNSCALE)),
            interpolation=cv2.INTER_AREA,
        )
        blurred = cv2.resize(
            cv2.GaussianBlur(small, (0, 0), BLUR_SIGMA), size, interpolation=cv2.INTER_LINEAR
        )
        canvas = mirrored + (blurred.astype(np.float32) - mirrored) * self._soft
        extended: Frame = np.rint(canvas).astype(np.uint8)
        extended[pad : pad + self.height, pad : pad + self.width] = picture
        return extended
