"""A generation as the client sees it, typed; a page of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reelforge.contract import Status


@dataclass(frozen=True)
class Generation:
    """One poll's answer. ``raw`` keeps the whole JSON (fields this SDK does not know)."""

    id: str
    status: Status
    progress: int | None
    video_url: str | None
    error_name: str | None
    error_message: str | None
    credits_used: float | None
    raw: dict[str, Any]
    model: str | None = None
    created_at: float | None = None
    """Seconds since the epoch (reelforge's answers; None where a server omits it)."""
    finished_at: float | None = None
    queue_position: int | None = None
    """1 = the next of its model's queued jobs to start (reelforge's extension; None unless
    queued)."""
    eta_seconds: int | None = None
    """Expected seconds until the video is done (reelforge's extension; None if unknown)."""

    @property
    def done(self) -> bool:
        return self.status.is_terminal

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> Generation:
        video = body.get("video") or {}
        error = body.get("error") or {}
        usage = (body.get("meta") or {}).get("usage") or {}
        progress = body.get("progress")
        return cls(
            id=str(body.get("id") or body.get("generation_id")),
            status=_status(body.get("status")),
            progress=int(progress) if isinstance(progress, int | float) else None,
            video_url=video.get("url"),
            error_name=error.get("name"),
            error_message=error.get("message"),
            credits_used=usage.get("credits_used"),
            raw=body,
            model=body.get("model"),
            created_at=body.get("created_at"),
            finished_at=body.get("finished_at"),
            queue_position=body.get("queue_position"),
            eta_seconds=body.get("eta_seconds"),
        )


@dataclass(frozen=True)
class Page:
    """One page of the key's generations, newest first (reelforge's extension). The next
    page starts ``after=last_id``, while ``has_more``; ``raw`` keeps the whole JSON."""

    data: tuple[Generation, ...]
    has_more: bool
    last_id: str | None
    raw: dict[str, Any]

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> Page:
        data = tuple(Generation.from_wire(item) for item in body.get("data") or ())
        last_id = body.get("last_id")
        return cls(
            data, bool(body.get("has_more")), None if last_id is None else str(last_id), body
        )


def _status(value: object) -> Status:
    # The reference also reports "waiting" and "active" while a job is pending.
    aliases = {"waiting": Status.QUEUED, "active": Status.GENERATING}
    if not isinstance(value, str):
        raise ValueError(f"status {value!r} is not a string")
    return aliases.get(value) or Status(value)
