"""The vocabulary of the Hailuo-02 wire contract shared by the API, the engines and the SDK.

See ``shared/contract.md``: durations, resolutions, image rules and generation states.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from reelforge.request import Resolution

__all__ = ["Resolution", "Status"]

MAX_PROMPT_CHARS: Final = 2000
MAX_IMAGE_BYTES: Final = 20 * 1024 * 1024
"""Largest accepted image file, in bytes (the contract's "at most 20 MB")."""
MIN_IMAGE_SHORT_SIDE: Final = 300
"""An image's shorter side must be strictly greater than this, in pixels."""
MIN_IMAGE_RATIO: Final = 2 / 5
MAX_IMAGE_RATIO: Final = 5 / 2
"""Width/height must lie strictly between these."""
DEFAULT_MODEL: Final = "minimax/hailuo-02"


class Status(StrEnum):
    """The states of a generation, as the wire contract names them."""

    QUEUED = "queued"
    GENERATING = "generating"
    COMPLETED = "completed"
    ERROR = "error"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES: Final = frozenset({Status.COMPLETED, Status.ERROR})
