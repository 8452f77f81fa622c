"""Request and response bodies of both dialects of the contract (legacy and unified).

Both parse into one ``Submission``; field names in error messages are the dialect's own.
Types are strict: a duration of ``"6"`` or ``6.5`` is refused, not converted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from reelforge.contract import MAX_PROMPT_CHARS, Resolution, Status


@dataclass(frozen=True)
class Submission:
    """A create request in the dialect-free form; ``*_field`` name the images' fields."""

    model: str
    prompt: str
    duration: int
    resolution: Resolution
    prompt_optimizer: bool
    seed: int | None
    first_image: str | None
    last_image: str | None
    first_field: str
    last_field: str


class _Create(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    first_field: ClassVar[str]

    model: str = Field(description="Model id, e.g. `minimax/hailuo-02`.")
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    last_image_url: str | None = Field(None, description="Last frame: URL or base64 image.")
    duration: Literal[6, 10] = Field(6, description="Seconds.")
    resolution: Literal["768P", "1080P"] = "768P"
    seed: int | None = Field(None, ge=0, lt=2**32, description="reelforge extension.")

    def submission(self) -> Submission:
        first_image, optimizer = self._dialect_fields()
        return Submission(
            model=self.model,
            prompt=self.prompt,
            duration=self.duration,
            resolution=Resolution(self.resolution),
            prompt_optimizer=optimizer,
            seed=self.seed,
            first_image=first_image,
            last_image=self.last_image_url,
            first_field=self.first_field,
            last_field="last_image_url",
        )

    def _dialect_fields(self) -> tuple[str | None, bool]:
        """The first frame and the prompt-optimizer flag under this dialect's names."""
        raise NotImplementedError


class LegacyCreate(_Create):
    """Body of ``POST /v2/generate/video/minimax/generation``."""

    first_field = "first_frame_image"
    first_frame_image: str | None = Field(None, description="First frame: URL or base64 image.")
    prompt_optimizer: bool = True

    def _dialect_fields(self) -> tuple[str | None, bool]:
        return self.first_frame_image, self.prompt_optimizer


class UnifiedCreate(_Create):
    """Body of ``POST /v2/video/generations``."""

    first_field = "image_url"
    image_url: str | None = Field(None, description="First frame: URL or base64 image.")
    enhance_prompt: bool = True

    def _dialect_fields(self) -> tuple[str | None, bool]:
        return self.image_url, self.enhance_prompt


class LegacyCreated(BaseModel):
    generation_id: str
    status: Status


class UnifiedCreated(BaseModel):
    id: str
    status: Status


class VideoLink(BaseModel):
    url: str


class ErrorInfo(BaseModel):
    name: str
    message: str


class Generation(BaseModel):
    """What a poll answers. ``progress``, ``model`` and the times are extensions."""

    id: str
    status: Status
    video: VideoLink | None
    error: ErrorInfo | None
    meta: dict[str, Any] | None
    progress: int = Field(description="Percent done, 0..100.")
    model: str
    created_at: float
    finished_at: float | None
