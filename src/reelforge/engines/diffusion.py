"""What the diffusers engines share: dtypes and devices, frame counts, the step callback,
out-of-memory handling, and turning a generated clip into the contract's frames.

Each engine stays one self-contained file (``wan.py``, ``ltx.py``, ``minimax_h3.py``); this
module holds only the plumbing that would otherwise be copied into each.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

from reelforge.engines.base import Keyframes, OnStep
from reelforge.engines.options import DiffusersOptions, request_options
from reelforge.engines.registry import DIFFUSERS_REQUEST_OPTIONS, ModelSpec
from reelforge.errors import InvalidRequest, OutOfMemory
from reelforge.media.intake import source_size
from reelforge.media.sizing import output_size
from reelforge.request import JobRequest, Resolution
from reelforge.video import Frame

if TYPE_CHECKING:
    import torch


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype called ``name`` (``bfloat16``, ``float16``, ``float32``)."""
    import torch

    dtypes = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
    if name not in dtypes:
        raise ValueError(f"dtype {name!r} is not one of {', '.join(dtypes)}")
    return dtypes[name]


def require_accelerator(spec: ModelSpec, option: str) -> None:
    """Refuse an option that needs a GPU when the model runs on the CPU."""
    if spec.device == "cpu":
        raise ValueError(
            f"model {spec.id!r}: option {option!r} needs an accelerator (device is cpu)"
        )


def frames_for(seconds: int, fps: int, *, step: int, offset: int) -> int:
    """The smallest valid frame count (``step * k + offset``) covering ``seconds`` at ``fps``."""
    wanted = seconds * fps
    return step * max(0, math.ceil((wanted - offset) / step)) + offset


def step_callback(on_step: OnStep, total: int) -> Callable[..., dict[str, Any]]:
    """A ``callback_on_step_end`` reporting each finished step; a raise from ``on_step``
    (a cancel) propagates at once, before the VAE decode."""

    def callback(
        _pipe: object, index: int, _timestep: object, kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        on_step(index + 1, total)
        return kwargs

    return callback


@contextmanager
def out_of_memory_guard(spec: ModelSpec) -> Iterator[None]:
    """Turn ``torch.OutOfMemoryError`` into ``OutOfMemory`` naming the settings to change,
    after freeing what the failed call held, so the worker can go on."""
    import torch

    try:
        yield
    except torch.OutOfMemoryError as exc:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise OutOfMemory(
            f"model {spec.id!r} ran out of accelerator memory ({exc}); in the model registry "
            'set a smaller canvas, or options.cpu_offload = "model" / "group", or '
            "options.vae_tiling = true"
        ) from None


@dataclass(frozen=True)
class Sampling:
    """How a request is denoised: the request's options, else the registry's, else the
    engine's defaults."""

    steps: int
    guidance_scale: float
    negative_prompt: str


def sampling(
    spec: ModelSpec, options: DiffusersOptions, request: JobRequest, defaults: Sampling
) -> Sampling:
    """The request's ``num_inference_steps``/``guidance_scale``/``negative_prompt``, each
    falling back to the registry (``steps``, ``options``) and then to ``defaults``;
    ``InvalidRequest`` for an option the engine does not take or a wrong value."""
    asked = request_options(request.options, DIFFUSERS_REQUEST_OPTIONS)
    guidance = _first(asked.guidance_scale, options.guidance_scale, defaults.guidance_scale)
    negative = _first(asked.negative_prompt, options.negative_prompt, defaults.negative_prompt)
    steps = _first(asked.num_inference_steps, spec.steps, defaults.steps)
    return Sampling(steps=steps, guidance_scale=guidance, negative_prompt=negative)


def _first(*values: Any) -> Any:
    return next(value for value in values if value is not None)


def check_fps(spec: ModelSpec, request: JobRequest, fps: int) -> None:
    """Refuse a request for a frame rate other than the model's ``fps`` (the API refuses it
    at submit from the capabilities; this holds the line behind it)."""
    if request.fps is not None and request.fps != fps:
        raise InvalidRequest("fps", f"model {spec.id!r} makes {fps} fps, not {request.fps}")


def canvas_aspect(request: JobRequest, keyframes: Keyframes) -> tuple[int, int] | None:
    """(width, height) whose aspect the canvas takes: the output's, when a keyframe or
    explicit dimensions set it; None for text alone at a resolution class (the configured
    canvas is used as it is)."""
    keyframe = keyframes.any
    if keyframe is None and isinstance(request.size, Resolution):
        return None
    return output_size(request.size, source_size(keyframe) if keyframe else None)


def contract_frames(
    clip: npt.NDArray[np.floating[Any]],
    request: JobRequest,
    keyframes: Keyframes,
    spec: ModelSpec,
    count: int,
    *,
    keep_last: bool = False,
) -> tuple[tuple[int, int], Iterator[Frame]]:
    """``count`` frames of ``clip`` (F, H, W, 3 floats in 0..1) at the request's size (or
    kept native), scaled to cover it and centre-cropped, never stretched; returns (width,
    height) and frames. The first ``count`` frames, or with ``keep_last`` (the clip ends on
    a given last frame) frames picked evenly from first to last."""
    if keep_last:
        clip = clip[np.linspace(0, len(clip) - 1, count).round().astype(int)]
    height, width = clip.shape[1:3]
    if spec.keep_native_size:
        size = (width, height)
    else:
        keyframe = keyframes.any
        size = output_size(request.size, source_size(keyframe) if keyframe else None)

    def frames() -> Iterator[Frame]:
        for frame in clip[:count]:
            pixels = (np.clip(frame, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
            yield pixels if (width, height) == size else _cover_frame(pixels, size)

    return size, frames()


def _cover_frame(pixels: Frame, size: tuple[int, int]) -> Frame:
    """``pixels`` scaled to cover ``size`` (width, height) and centre-cropped to it."""
    height, width = pixels.shape[:2]
    scale = max(size[0] / width, size[1] / height)
    scaled = (max(size[0], round(width * scale)), max(size[1], round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LANCZOS4
    resized: Frame = cv2.resize(pixels, scaled, interpolation=interpolation)
    left, top = (scaled[0] - size[0]) // 2, (scaled[1] - size[1]) // 2
    return np.ascontiguousarray(resized[top : top + size[1], left : left + size[0]])


def check_offload(spec: ModelSpec, options: DiffusersOptions) -> None:
    """Refuse offloading without an accelerator, before any weights are read."""
    if options.cpu_offload is not None:
        require_accelerator(spec, "cpu_offload")


def checked_canvas(spec: ModelSpec, canvas: tuple[int, int], multiple: int) -> tuple[int, int]:
    height, width = canvas
    if height <= 0 or width <= 0 or height % multiple or width % multiple:
        raise ValueError(
            f"model {spec.id!r}: canvas {height}x{width} (height x width) must be positive "
            f"multiples of {multiple} for this checkpoint"
        )
    return height, width


def place(spec: ModelSpec, options: DiffusersOptions, pipeline: Any) -> None:
    """Move the pipeline to the device, or let an offload mode move each part as it runs."""
    import torch

    offload = options.cpu_offload
    if offload == "model":
        pipeline.enable_model_cpu_offload(device=spec.device)
    elif offload == "sequential":
        pipeline.enable_sequential_cpu_offload(device=spec.device)
    elif offload == "group":
        pipeline.enable_group_offload(
            onload_device=torch.device(spec.device),
            offload_type="block_level",
            num_blocks_per_group=1,
        )
    else:
        pipeline.to(spec.device)


def speed_up(
    spec: ModelSpec, options: DiffusersOptions, pipeline: Any, *, timestep: Callable[[], Any]
) -> None:
    """Apply the registry's VAE tiling, attention backend (process-wide), cache and compile
    options to the VAE and each transformer."""
    transformers = [pipeline.transformer, getattr(pipeline, "transformer_2", None)]
    transformers = [transformer for transformer in transformers if transformer is not None]
    if options.vae_tiling:
        pipeline.vae.enable_tiling()
    for transformer in transformers:
        if options.attention_backend is not None:
            try:
                transformer.set_attention_backend(options.attention_backend)
            except (ValueError, RuntimeError, ImportError) as exc:
                raise ValueError(f"model {spec.id!r}: options.attention_backend: {exc}") from exc
        if options.cache is not None:
            transformer.enable_cache(_cache_config(options.cache, timestep))
        if options.compile:
            transformer.compile_repeated_blocks(fullgraph=True)


def _cache_config(name: str, timestep: Callable[[], Any]) -> Any:
    from diffusers import (
        FirstBlockCacheConfig,
        PyramidAttentionBroadcastConfig,
        TaylorSeerCacheConfig,
    )

    if name == "first_block":
        return FirstBlockCacheConfig(threshold=0.05)
    if name == "taylorseer":
        return TaylorSeerCacheConfig()
    return PyramidAttentionBroadcastConfig(
        spatial_attention_block_skip_range=2,
        spatial_attention_timestep_skip_range=(100, 800),
        current_timestep_callback=timestep,
    )


def aspect_canvas(
    canvas: tuple[int, int], aspect: tuple[int, int] | None, multiple: int
) -> tuple[int, int]:
    """(height, width) to generate at: ``canvas`` without an ``aspect``; else the aspect of
    (width, height) at the canvas's area, each side the nearest multiple of ``multiple``."""
    if aspect is None:
        return canvas
    area, ratio = canvas[0] * canvas[1], aspect[0] / aspect[1]
    height = max(multiple, round(math.sqrt(area / ratio) / multiple) * multiple)
    width = max(multiple, round(math.sqrt(area * ratio) / multiple) * multiple)
    return height, width


def cover(image: Image.Image, width: int, height: int) -> Image.Image:
    """``image`` scaled to cover ``width`` x ``height`` and centre-cropped to it."""
    return ImageOps.fit(image.convert("RGB"), (width, height), Image.Resampling.LANCZOS)
