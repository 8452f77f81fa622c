"""What the SDK tests send: pictures of known aspect ratios and a quick polling policy."""

from __future__ import annotations

from PIL import Image

from reelforge.client import Policy
from tests.pictures import encoded, textured

PORTRAIT = textured(480, 720, seed=3)
"""2:3: a video starting on it is 768x1152."""
LANDSCAPE = textured(900, 600, seed=1)
"""3:2: 1152x768."""
SQUARE = textured(600, 600, seed=2)
"""1:1: 768x768."""
TOO_WIDE = Image.new("RGB", (1000, 300), (90, 90, 90))
"""Shorter side 300 px and ratio 10:3: breaks two rules."""
GIF = encoded(textured(480, 720), "GIF")
PAGE = b"<html><body>not a picture</body></html>"

QUICK = Policy(
    retry_base=0.01,
    retry_cap=0.1,
    first_poll=0.05,
    poll_growth=1.5,
    poll_cap=0.2,
    jitter=lambda: 1.0,
)
"""Polls every 50..200 ms: a preview generation takes about a second."""
