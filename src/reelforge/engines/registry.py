"""The model registry: which model ids a deployment serves, with which engine and weights;
and the table of engines, the one place an engine kind is declared.

Without a file, reelforge serves ``minimax/hailuo-02`` and ``preview`` with the preview
engine. ``REELFORGE_MODELS=path.toml`` replaces that:

```toml
hailuo = "minimax-h3"                  # the model id minimax/hailuo-02 points to

[models."minimax-h3"]
engine = "minimax_h3"                  # preview | wan | ltx | minimax_h3 | upstream
weights = "/models/MiniMax-H3"         # a local directory or a hub repo id
dtype = "bfloat16"
device = "cuda"
steps = 30
text = true                            # what the checkpoint can start from or use
first_frame = true                     # (all four checked at submit)
last_frame = true
last_frame_required = false            # true: a first frame needs a last one (Wan FLF2V)
canvas = [768, 1344]                   # generation size (height, width); default: the model's
keep_native_size = false               # true: the MP4 keeps the generated size
options = { cpu_offload = "model", vae_tiling = true }   # the engine's options model
prompt_optimizer = { enabled = true, system_prompt = "…" }  # overrides (see ``optimizer``)
```

Each entry is validated by ``ModelSpec`` (pydantic; ``options`` by the engine's own model
in ``engines.options``); a bad entry stops the start with a ``ValueError`` naming the file
and the key path.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal, Self, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from reelforge.contract import DEFAULT_MODEL
from reelforge.engines.options import (
    EngineOptions,
    LTXOptions,
    MiniMaxH3Options,
    PositiveWhole,
    PreviewOptions,
    UpstreamOptions,
    WanOptions,
)

if TYPE_CHECKING:
    from reelforge.engines.base import AnyEngine, Engine
    from reelforge.request import JobRequest

MIN_SHORT_SIDE: Final = 256
MAX_LONG_SIDE: Final = 2700
"""Output sizes every engine makes, in pixels (even sides; the engines scale their canvas)."""
Options = TypeVar("Options", bound=EngineOptions)
DIFFUSERS_REQUEST_OPTIONS: Final = ("negative_prompt", "num_inference_steps", "guidance_scale")


class OptimizerSpec(BaseModel):
    """A model's own terms for the prompt optimizer (``reelforge.optimizer``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: StrictBool = True
    """False: this model's prompts are used as given, whatever the request's flag."""
    system_prompt: Annotated[StrictStr, Field(min_length=1)] | None = None
    """Replaces the optimizer's system prompt for this model's jobs."""


class ModelSpec(BaseModel):
    """One served model: its engine, weights and what it can be asked."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: StrictStr
    engine: StrictStr
    """A name in ``ENGINES``."""
    weights: StrictStr | None = None
    """A local directory or a hub repo id; every engine but the preview needs one."""
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    device: StrictStr = "cuda"
    steps: PositiveWhole | None = None
    """Denoising steps; None: the engine's default (a request may ask for others)."""
    text: StrictBool = True
    """Starts from the prompt alone; False: every request needs a first frame image."""
    first_frame: StrictBool = True
    last_frame: StrictBool = True
    last_frame_required: StrictBool = False
    """Every request that starts from an image must end on one too (Wan 2.1 FLF2V)."""
    canvas: tuple[PositiveWhole, PositiveWhole] | None = None
    """Generation size, (height, width) in pixels; None: the model family's default."""
    keep_native_size: StrictBool = False
    job_timeout_seconds: Annotated[float, Field(gt=0, strict=True)] | None = None
    """The longest a job of this model may run, wall clock, in seconds (then it ends in
    ``error``, ``TimedOut``); None: the settings' ``job_timeout_seconds``."""
    options: EngineOptions = Field(default_factory=PreviewOptions)
    """The engine's options model (``ENGINES[engine].options``); a mapping validates into it."""
    prompt_optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)

    def options_as(self, kind: type[Options]) -> Options:
        """``options`` as the engine's own model ``kind``; ``TypeError`` if it is another's."""
        if not isinstance(self.options, kind):
            raise TypeError(f"model {self.id!r}: options are {type(self.options).__name__}")
        return self.options

    @field_validator("engine")
    @classmethod
    def _known_engine(cls, engine: str) -> str:
        if engine not in ENGINES:
            raise ValueError(f"engine {engine!r} is not one of {', '.join(ENGINES)}")
        return engine

    @field_validator("canvas", mode="before")
    @classmethod
    def _two_sides(cls, canvas: Any) -> Any:
        if isinstance(canvas, list | tuple) and len(canvas) != 2:
            raise ValueError("must be [height, width] in pixels")
        return canvas

    @field_validator("options", mode="before")
    @classmethod
    def _engine_options(cls, options: Any, info: ValidationInfo) -> Any:
        kind = ENGINES.get(info.data.get("engine", ""))
        if kind is None:
            return PreviewOptions()  # the engine's own error says what is wrong
        if isinstance(options, kind.options):
            return options
        if not isinstance(options, Mapping):
            raise ValueError("must be a table of options")
        return kind.options.model_validate(dict(options))

    @model_validator(mode="before")
    @classmethod
    def _default_options(cls, data: Any) -> Any:
        """Options left out are the engine's defaults, not the preview's."""
        if isinstance(data, dict) and "options" not in data:
            return {**data, "options": {}}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.engine not in ("preview", "upstream") and not self.weights:
            raise ValueError(f"engine {self.engine!r} needs weights (a directory or repo id)")
        if self.last_frame_required and not self.last_frame:
            raise ValueError("last_frame_required = true needs last_frame = true")
        return self


@dataclass(frozen=True)
class EngineKind:
    """What reelforge knows about an engine before loading it."""

    options: type[EngineOptions]
    """The model its registry ``options`` table validates into."""
    fps: int
    """Native frame rate (a registry entry's ``options.fps`` may set another)."""
    audio: bool
    seconds: tuple[int, int]
    """Shortest and longest clip it makes, in seconds."""
    request_options: tuple[str, ...]
    """Per-request options it honours (``JobRequest.options`` keys)."""
    build: Callable[[ModelSpec, float], AnyEngine]
    """``build(spec, preview_scale)``: the engine, not loaded; imports its module."""
    fps_choices: tuple[int, int] | None = None
    """Lowest and highest frame rate a request may ask; None: the native rate only."""


def _preview(spec: ModelSpec, scale: float) -> Engine:
    from reelforge.engines.preview import PreviewEngine

    return PreviewEngine(scale=scale)


def _wan(spec: ModelSpec, scale: float) -> Engine:
    from reelforge.engines.wan import WanEngine

    return WanEngine(spec)


def _ltx(spec: ModelSpec, scale: float) -> Engine:
    from reelforge.engines.ltx import LTXEngine

    return LTXEngine(spec)


def _minimax_h3(spec: ModelSpec, scale: float) -> Engine:
    from reelforge.engines.minimax_h3 import MiniMaxH3Engine

    return MiniMaxH3Engine(spec)


def _upstream(spec: ModelSpec, scale: float) -> AnyEngine:
    from reelforge.engines.upstream import UpstreamEngine

    return UpstreamEngine(spec)


ENGINES: Final[Mapping[str, EngineKind]] = {
    "preview": EngineKind(PreviewOptions, 25, False, (1, 20), (), _preview, fps_choices=(8, 60)),
    "wan": EngineKind(WanOptions, 16, False, (1, 20), DIFFUSERS_REQUEST_OPTIONS, _wan),
    "ltx": EngineKind(LTXOptions, 24, False, (1, 20), DIFFUSERS_REQUEST_OPTIONS, _ltx),
    # 17n+5 frames at 24 fps within 5..15 s: 15 s would need 362 frames (15.08 s).
    "minimax_h3": EngineKind(
        MiniMaxH3Options, 24, True, (5, 14), ("num_inference_steps",), _minimax_h3
    ),
    # A hosted provider: the provider checks lengths and rates itself (refusals are errors).
    "upstream": EngineKind(UpstreamOptions, 24, False, (1, 20), (), _upstream, (8, 60)),
}
"""Engine name → its kind. Adding an engine: its module, its options model, a row here."""


@dataclass(frozen=True)
class Capabilities:
    """What a served model can be asked, and what it makes (the API checks at submit).

    Sizes are output pixels (even sides), durations whole seconds, rates frames per second.
    """

    text: bool
    first_frame: bool
    last_frame: bool
    last_frame_required: bool
    audio: bool
    fps: int
    """The rate a request without ``fps`` gets."""
    fps_choices: tuple[int, int]
    """Lowest and highest ``fps`` a request may ask."""
    min_seconds: int
    max_seconds: int
    min_short_side: int
    max_long_side: int
    request_options: tuple[str, ...]
    """The ``JobRequest.options`` keys the model takes."""

    def timing_refusal(self, request: JobRequest, who: str) -> tuple[str, str] | None:
        """Why ``who`` (the model, as a message names it) cannot make ``request``'s length or
        frame rate, as (the ``JobRequest`` field, the reason); None if it can."""
        if not self.min_seconds <= request.duration_s <= self.max_seconds:
            return "duration_s", (
                f"{request.duration_s} s is not a length {who} can make; it makes "
                f"{self.min_seconds} to {self.max_seconds} s"
            )
        low, high = self.fps_choices
        if request.fps is not None and not low <= request.fps <= high:
            choices = f"{low}" if low == high else f"{low} to {high}"
            return "fps", f"{request.fps} fps is not a rate {who} can make; it makes {choices}"
        return None

    def size_refusal(self, width: int, height: int) -> str | None:
        """Why a ``width`` x ``height`` output is not one the model makes; None if it is."""
        if width % 2 or height % 2:
            return "both sides must be even"
        if min(width, height) < self.min_short_side:
            return f"the shorter side must be at least {self.min_short_side} px"
        if max(width, height) > self.max_long_side:
            return f"the longer side must be at most {self.max_long_side} px"
        return None


def native_fps(spec: ModelSpec) -> int:
    """The frame rate ``spec`` makes: its ``options.fps``, else its engine's native rate."""
    fps = getattr(spec.options, "fps", None)
    return ENGINES[spec.engine].fps if fps is None else int(fps)


def capabilities(spec: ModelSpec) -> Capabilities:
    kind = ENGINES[spec.engine]
    fps = native_fps(spec)
    return Capabilities(
        text=spec.text,
        first_frame=spec.first_frame,
        last_frame=spec.last_frame,
        last_frame_required=spec.last_frame_required,
        audio=kind.audio,
        fps=fps,
        fps_choices=kind.fps_choices or (fps, fps),
        min_seconds=kind.seconds[0],
        max_seconds=kind.seconds[1],
        min_short_side=MIN_SHORT_SIDE,
        max_long_side=MAX_LONG_SIDE,
        request_options=kind.request_options,
    )


PREVIEW: Final = ModelSpec(id="preview", engine="preview", dtype="float32", device="cpu")


def default_registry() -> dict[str, ModelSpec]:
    """The embedded default: the preview engine answers both ids."""
    return {DEFAULT_MODEL: PREVIEW, "preview": PREVIEW}


def load_registry(path: Path) -> dict[str, ModelSpec]:
    """Served model id → spec, read from ``path``; ``ValueError`` naming the file and the key
    path of the first bad value (``models.'wan'.options.fps``)."""
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"model registry {path}: {exc}") from exc
    entries = document.get("models")
    if not isinstance(entries, dict) or not entries:
        raise ValueError(f"model registry {path}: no [models.<id>] tables")
    served = {model_id: _spec(model_id, entry, path) for model_id, entry in entries.items()}
    hailuo = document.get("hailuo")
    if hailuo is not None:
        if hailuo not in served:
            raise ValueError(f"model registry {path}: hailuo = {hailuo!r} is not a model here")
        served.setdefault(DEFAULT_MODEL, served[hailuo])
    for model_id, spec in served.items():
        fallback = getattr(spec.options, "fallback", None)
        if fallback is not None and (fallback not in served or fallback == model_id):
            raise ValueError(
                f"model registry {path}: models.{model_id!r}.options.fallback: "
                f"{fallback!r} is not another model here"
            )
    return served


def is_upstream(spec: ModelSpec) -> bool:
    """Whether ``spec`` is served by a hosted provider (its jobs go to the upstream pool)."""
    return spec.engine == "upstream"


def _spec(model_id: str, entry: object, path: Path) -> ModelSpec:
    where = f"model registry {path}: models.{model_id!r}"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be a table")
    if "id" in entry:
        raise ValueError(f"{where}.id: unknown key (the table's name is the model id)")
    try:
        return ModelSpec.model_validate({"id": model_id, **entry})
    except ValidationError as exc:
        errors = (_describe(f"models.{model_id!r}", error) for error in exc.errors())
        raise ValueError(f"model registry {path}: {'; '.join(errors)}") from None


def _describe(where: str, error: Any) -> str:
    """One pydantic error as ``where.key.path: what is wrong (got value)``."""
    parts = error["loc"]
    location = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts)
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"{where}{location}: unknown key"
    if error["type"] == "missing":
        return f"{where}{location}: required"
    shown = "" if not location or isinstance(error["input"], dict) else f" (got {error['input']!r})"
    return f"{where}{location}: {message}{shown}"
