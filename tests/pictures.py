"""Test pictures made in code: textured images whose motion optical flow can measure."""

from __future__ import annotations

import io

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image


def textured(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth random texture with no black or white: every channel stays in 40..215."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(2, height // 24), max(2, width // 24), 3), dtype=np.uint8)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    fine = cv2.resize(
        rng.integers(0, 256, (height // 6, width // 6, 3), dtype=np.uint8),
        (width, height),
        interpolation=cv2.INTER_LINEAR,
    )
    mixed = 0.7 * smooth.astype(np.float32) + 0.3 * fine
    return Image.fromarray((40 + mixed * (175 / 255)).astype(np.uint8), "RGB")


def disk_scene(width: int, height: int, centre_x: float) -> Image.Image:
    """A plain grey-blue backdrop with one bright disk centred at ``centre_x`` (0..1)."""
    frame = np.full((height, width, 3), (60, 70, 90), np.uint8)
    radius = height // 6
    cv2.circle(frame, (round(centre_x * width), height // 2), radius, (235, 200, 60), -1)
    return Image.fromarray(frame, "RGB")


def encoded(image: Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def sharpness(region: npt.NDArray[np.uint8]) -> float:
    """Variance of the Laplacian: high for fine detail, low for a blur."""
    grey = cv2.cvtColor(np.ascontiguousarray(region), cv2.COLOR_RGB2GRAY)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())
