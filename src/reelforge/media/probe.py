"""What an MP4 made elsewhere holds, read with PyAV (the gateway engine's videos are checked
before they are stored)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av


def probe_mp4(path: Path) -> dict[str, Any]:
    """``width``, ``height`` (pixels), ``fps``, ``frames``, ``duration_s`` and ``bytes`` of the
    MP4 at ``path``, its first frame decoded; ``ValueError`` if it holds no decodable video."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError("it holds no video stream")
            stream = container.streams.video[0]
            first = next(container.decode(stream), None)
            if first is None:
                raise ValueError("its video stream has no frame")
            base = stream.time_base
            duration = float(stream.duration * base) if stream.duration and base else 0.0
            rate = stream.average_rate
            return {
                "width": first.width,
                "height": first.height,
                "fps": float(rate) if rate else None,
                "frames": stream.frames,
                "duration_s": round(duration, 3),
                "bytes": path.stat().st_size,
            }
    except av.FFmpegError as exc:
        raise ValueError(f"it is not a readable MP4: {exc}") from exc
