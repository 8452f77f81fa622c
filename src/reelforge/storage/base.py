"""The storage interface: where input images and finished videos live, and their links."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class Storage(Protocol):
    """Inputs and videos by key; ``video_url`` is a signed, expiring link a client can GET."""

    @property
    def scratch(self) -> Path:
        """A local directory for files being written before they are saved."""
        ...

    def save_input(self, data: bytes) -> str:
        """Keep an input image; returns its key (the same bytes give the same key)."""
        ...

    def load_input(self, key: str) -> bytes: ...

    def save_video(self, name: str, source: Path) -> str:
        """Move a finished MP4 in as ``videos/<name>.mp4`` (whole or not at all); its key."""
        ...

    def discard(self, key: str) -> None:
        """Remove a stored file (a result nobody will point to); missing is fine."""
        ...

    def discard_videos(self, name_prefix: str) -> int:
        """Remove every ``videos/<name_prefix>*.mp4`` (a job's video and any an earlier,
        killed attempt left behind); how many went."""
        ...

    def video_url(self, key: str, *, base_url: str) -> str:
        """A signed link to ``key``; ``base_url`` is the API's own address (local storage
        serves files itself; object stores ignore it)."""
        ...

    def sweep_scratch(self, max_age_seconds: float) -> int:
        """Remove scratch files untouched for ``max_age_seconds``; how many went."""
        ...


def sweep_directory(directory: Path, cutoff: float) -> int:
    """Remove the files in ``directory`` last touched before ``cutoff`` (epoch seconds);
    how many went. Files another process removed meanwhile are skipped."""
    removed = 0
    for path in directory.iterdir():
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:  # another worker swept it first
            continue
    return removed
