"""``JobRequest``: the one typed form of a generation request inside reelforge.

A dialect maps its wire body to a ``JobRequest``; the job store keeps it (as JSON, through
``to_json``/``from_json``); the worker reads it and the engine receives it. Nothing else
reads a request by string keys. The wire rules of a dialect (Hailuo's 6|10 s, 768P|1080P)
live in that dialect; what a model can make lives in its capabilities.

The stored JSON form is versioned by its shape: ``from_json`` also reads the rows written
before this type existed (``duration``/``resolution`` at the top level).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

JSON = Any
"""A JSON-serialisable value (dicts, lists, str, int, float, bool, None)."""


class Resolution(StrEnum):
    """A contract resolution class: the short side of the output, the long side following the
    keyframe's aspect (16:9 without one)."""

    P768 = "768P"
    P1080 = "1080P"

    @property
    def short_side(self) -> int:
        """The shorter side of the output video, in pixels."""
        return 768 if self is Resolution.P768 else 1080

    @property
    def landscape_size(self) -> tuple[int, int]:
        """Width and height of a text-only (16:9) video, in pixels."""
        return (1366, 768) if self is Resolution.P768 else (1920, 1080)


@dataclass(frozen=True)
class Dimensions:
    """An explicit output size in pixels (a keyframe of another aspect is cover-cropped)."""

    width: int
    height: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


OutputSize = Resolution | Dimensions
"""Either a resolution class (sized by the keyframe's aspect) or explicit dimensions."""


@dataclass(frozen=True)
class ImageRef:
    """An input image: a ``url`` the worker fetches (guarded), or the storage ``key`` of an
    image the API already checked and kept. ``field`` is the client's name for it, for
    error messages in the client's own words."""

    field: str
    url: str | None = None
    key: str | None = None

    def __post_init__(self) -> None:
        if (self.url is None) == (self.key is None):
            raise ValueError("an ImageRef has exactly one of url and key")

    def to_json(self) -> dict[str, str]:
        found = {"url": self.url, "key": self.key, "field": self.field}
        return {name: value for name, value in found.items() if value is not None}

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> ImageRef | None:
        if data is None:
            return None
        return cls(field=str(data.get("field", "image")), url=data.get("url"), key=data.get("key"))


DEFAULT_SIZE: Final = Resolution.P768


@dataclass(frozen=True)
class JobRequest:
    """A validated generation request. Durations are seconds, sizes pixels, ``fps`` frames per
    second (None: the model's native rate)."""

    prompt: str
    duration_s: int = 6
    size: OutputSize = DEFAULT_SIZE
    first_frame: ImageRef | None = None
    last_frame: ImageRef | None = None
    fps: int | None = None
    seed: int | None = None
    """None: derived from the prompt, so the same request gives the same video."""
    prompt_optimizer: bool = True
    watermark: bool = False
    """Stamp a visible "AI-generated" mark on every frame (``media.watermark``)."""
    options: Mapping[str, JSON] = field(default_factory=dict)
    """Model options a dialect passes through (``negative_prompt``, ``num_inference_steps``,
    ...), checked against the model at submit."""

    @property
    def resolution(self) -> Resolution | None:
        """The resolution class, when the size is one."""
        return self.size if isinstance(self.size, Resolution) else None

    @property
    def input_keys(self) -> tuple[str, ...]:
        """Storage keys of the kept input images (what retention may delete)."""
        refs = (self.first_frame, self.last_frame)
        return tuple(ref.key for ref in refs if ref is not None and ref.key is not None)

    def to_json(self) -> dict[str, JSON]:
        """The stored form: strict JSON data."""
        size: dict[str, JSON]
        if isinstance(self.size, Resolution):
            size = {"resolution": self.size.value}
        else:
            size = {"width": self.size.width, "height": self.size.height}
        return {
            "prompt": self.prompt,
            "duration_s": self.duration_s,
            "size": size,
            "first_frame": None if self.first_frame is None else self.first_frame.to_json(),
            "last_frame": None if self.last_frame is None else self.last_frame.to_json(),
            "fps": self.fps,
            "seed": self.seed,
            "prompt_optimizer": self.prompt_optimizer,
            "watermark": self.watermark,
            "options": dict(self.options),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobRequest:
        """Read the stored form, also as written before ``JobRequest`` existed (``duration``
        and ``resolution`` at the top level)."""
        size_data = data.get("size") or {"resolution": data.get("resolution", "768P")}
        size: OutputSize
        if "resolution" in size_data:
            size = Resolution(size_data["resolution"])
        else:
            size = Dimensions(int(size_data["width"]), int(size_data["height"]))
        return cls(
            prompt=str(data["prompt"]),
            duration_s=int(data.get("duration_s", data.get("duration", 6))),
            size=size,
            first_frame=ImageRef.from_json(data.get("first_frame")),
            last_frame=ImageRef.from_json(data.get("last_frame")),
            fps=data.get("fps"),
            seed=data.get("seed"),
            prompt_optimizer=bool(data.get("prompt_optimizer", True)),
            watermark=bool(data.get("watermark", False)),
            options=dict(data.get("options") or {}),
        )
