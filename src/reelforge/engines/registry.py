"""The model registry: which model ids a deployment serves, with which engine and weights.

Without a file, reelforge serves ``minimax/hailuo-02`` and ``preview`` with the preview
engine. ``REELFORGE_MODELS=path.toml`` replaces that:

```toml
hailuo = "minimax-h3"                  # the model id minimax/hailuo-02 points to

[models."minimax-h3"]
engine = "minimax_h3"                  # preview | wan | ltx | minimax_h3
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
options = { cpu_offload = "model", vae_tiling = true }
```
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from reelforge.contract import DEFAULT_MODEL

ENGINES: Final = ("preview", "wan", "ltx", "minimax_h3")
_KNOWN_KEYS: Final = frozenset(
    {
        "engine",
        "weights",
        "dtype",
        "device",
        "steps",
        "text",
        "first_frame",
        "last_frame",
        "last_frame_required",
        "canvas",
        "keep_native_size",
        "options",
    }
)

_KEY_TYPES: Final[dict[str, type]] = {
    "weights": str,
    "dtype": str,
    "device": str,
    "steps": int,
    "text": bool,
    "first_frame": bool,
    "last_frame": bool,
    "last_frame_required": bool,
    "keep_native_size": bool,
    "options": dict,
}


@dataclass(frozen=True)
class ModelSpec:
    """One served model: its engine, weights and what it can be asked."""

    id: str
    engine: str
    weights: str | None = None
    dtype: str = "bfloat16"
    device: str = "cuda"
    steps: int | None = None
    text: bool = True
    """Starts from the prompt alone; False: every request needs a first frame image."""
    first_frame: bool = True
    last_frame: bool = True
    last_frame_required: bool = False
    """Every request that starts from an image must end on one too (Wan 2.1 FLF2V)."""
    canvas: tuple[int, int] | None = None
    """Generation size, (height, width) in pixels; None: the model family's default."""
    keep_native_size: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Capabilities:
    """What a served model can be asked, and what it makes (the API checks at submit)."""

    text: bool
    first_frame: bool
    last_frame: bool
    last_frame_required: bool
    audio: bool
    fps: int
    durations: tuple[int, ...] = (6, 10)
    resolutions: tuple[str, ...] = ("768P", "1080P")


# Native frame rate and audio of each engine; a registry entry may set ``options.fps``.
_ENGINE_FACTS: Final = {
    "preview": (25, False),
    "wan": (16, False),
    "ltx": (24, False),
    "minimax_h3": (24, True),
}


def native_fps(engine: str) -> int:
    """The frame rate ``engine`` is listed with unless its entry sets ``options.fps``."""
    return _ENGINE_FACTS[engine][0]


def capabilities(spec: ModelSpec) -> Capabilities:
    fps, audio = _ENGINE_FACTS[spec.engine]
    return Capabilities(
        text=spec.text,
        first_frame=spec.first_frame,
        last_frame=spec.last_frame,
        last_frame_required=spec.last_frame_required,
        audio=audio,
        fps=int(spec.options.get("fps", fps)),
    )


PREVIEW: Final = ModelSpec(id="preview", engine="preview", dtype="float32", device="cpu")


def default_registry() -> dict[str, ModelSpec]:
    """The embedded default: the preview engine answers both ids."""
    return {DEFAULT_MODEL: PREVIEW, "preview": PREVIEW}


def load_registry(path: Path) -> dict[str, ModelSpec]:
    """Served model id → spec, read from ``path``; ``ValueError`` naming the bad entry."""
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
    return served


def _spec(model_id: str, entry: object, path: Path) -> ModelSpec:
    where = f"model registry {path}: models.{model_id!r}"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} must be a table")
    unknown = sorted(set(entry) - _KNOWN_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}; known: {sorted(_KNOWN_KEYS)}")
    engine = entry.get("engine")
    if engine not in ENGINES:
        raise ValueError(f"{where}: engine {engine!r} is not one of {', '.join(ENGINES)}")
    if engine != "preview" and not entry.get("weights"):
        raise ValueError(f"{where}: engine {engine!r} needs weights (a directory or repo id)")
    canvas = entry.get("canvas")
    if canvas is not None and not (
        isinstance(canvas, list) and len(canvas) == 2 and all(isinstance(v, int) for v in canvas)
    ):
        raise ValueError(f"{where}: canvas must be [height, width] in pixels")
    for key, kind in _KEY_TYPES.items():
        value = entry.get(key)
        wrong = type(value) is not kind or (kind is int and isinstance(value, int) and value < 1)
        if value is not None and wrong:
            wanted = {bool: "true or false", int: "a positive integer", str: "a string"}
            raise ValueError(f"{where}: {key} = {value!r} must be {wanted.get(kind, 'a table')}")
    if entry.get("last_frame_required") and entry.get("last_frame") is False:
        raise ValueError(f"{where}: last_frame_required = true needs last_frame = true")
    values = {key: value for key, value in entry.items() if key != "canvas"}
    return ModelSpec(id=model_id, canvas=tuple(canvas) if canvas else None, **values)
