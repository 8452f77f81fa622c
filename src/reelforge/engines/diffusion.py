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
from typing import TYPE_CHECKING, Any, Final

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

from reelforge.engines.base import Frame, OnStep, VideoRequest
from reelforge.engines.registry import ModelSpec
from reelforge.errors import OutOfMemory
from reelforge.media.sizing import output_size

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


def contract_frames(
    clip: npt.NDArray[np.floating[Any]],
    request: VideoRequest,
    spec: ModelSpec,
    count: int,
    *,
    keep_last: bool = False,
) -> tuple[tuple[int, int], Iterator[Frame]]:
    """``count`` frames of ``clip`` (F, H, W, 3 floats in 0..1) scaled to the contract's size
    for ``request`` (or kept native); returns (width, height) and frames. The first ``count``
    frames, or with ``keep_last`` (the clip ends on a given last frame) frames picked evenly
    from first to last."""
    if keep_last:
        clip = clip[np.linspace(0, len(clip) - 1, count).round().astype(int)]
    height, width = clip.shape[1:3]
    if spec.keep_native_size:
        size = (width, height)
    else:
        keyframe = request.first_frame or request.last_frame
        size = output_size(request.resolution, keyframe.size if keyframe else None)

    def frames() -> Iterator[Frame]:
        for frame in clip[:count]:
            pixels = (np.clip(frame, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
            if (pixels.shape[1], pixels.shape[0]) == size:
                yield pixels
                continue
            shrinking = size[0] < pixels.shape[1]
            interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LANCZOS4
            yield cv2.resize(pixels, size, interpolation=interpolation)

    return size, frames()


CACHES: Final = ("first_block", "taylorseer", "pab")
OPTIONS: Final[dict[str, tuple[Callable[[Any], bool], str]]] = {
    "cpu_offload": (lambda v: v in ("model", "sequential", "group"), "model, sequential or group"),
    "vae_tiling": (lambda v: isinstance(v, bool), "true or false"),
    "attention_backend": (lambda v: isinstance(v, str), "a diffusers attention backend name"),
    "cache": (lambda v: v in CACHES, " or ".join(CACHES)),
    "compile": (lambda v: isinstance(v, bool), "true or false"),
    "fps": (lambda v: type(v) is int and v > 0, "a positive whole number of frames per second"),
    "guidance_scale": (lambda v: type(v) in (int, float) and v >= 0, "a number >= 0"),
    "negative_prompt": (lambda v: isinstance(v, str), "text"),
}
"""Registry options the Wan and LTX engines apply: name → (check, what the check wants)."""


def check_options(spec: ModelSpec) -> None:
    """Refuse unknown options, bad values and offloading without an accelerator, before any
    weights are read."""
    where = f"model {spec.id!r}: options"
    unknown = sorted(set(spec.options) - set(OPTIONS))
    if unknown:
        raise ValueError(
            f"{where} {unknown} are unknown to the {spec.engine} engine; known: {list(OPTIONS)}"
        )
    for option, value in spec.options.items():
        check, wanted = OPTIONS[option]
        if not check(value):
            raise ValueError(f"{where}.{option} = {value!r}: expected {wanted}")
    if "cpu_offload" in spec.options:
        require_accelerator(spec, "cpu_offload")


def checked_canvas(spec: ModelSpec, canvas: tuple[int, int], multiple: int) -> tuple[int, int]:
    height, width = canvas
    if height <= 0 or width <= 0 or height % multiple or width % multiple:
        raise ValueError(
            f"model {spec.id!r}: canvas {height}x{width} (height x width) must be positive "
            f"multiples of {multiple} for this checkpoint"
        )
    return height, width


def place(spec: ModelSpec, pipeline: Any) -> None:
    """Move the pipeline to the device, or let an offload mode move each part as it runs."""
    import torch

    offload = spec.options.get("cpu_offload")
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


def speed_up(spec: ModelSpec, pipeline: Any, *, timestep: Callable[[], Any]) -> None:
    """Apply the registry's VAE tiling, attention backend (process-wide), cache and compile
    options to the VAE and each transformer."""
    options = spec.options
    transformers = [pipeline.transformer, getattr(pipeline, "transformer_2", None)]
    transformers = [transformer for transformer in transformers if transformer is not None]
    if options.get("vae_tiling"):
        pipeline.vae.enable_tiling()
    for transformer in transformers:
        if "attention_backend" in options:
            try:
                transformer.set_attention_backend(options["attention_backend"])
            except (ValueError, RuntimeError, ImportError) as exc:
                raise ValueError(f"model {spec.id!r}: options.attention_backend: {exc}") from exc
        if "cache" in options:
            transformer.enable_cache(_cache_config(options["cache"], timestep))
        if options.get("compile"):
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


def keyframe_canvas(
    canvas: tuple[int, int], keyframe: tuple[int, int] | None, multiple: int
) -> tuple[int, int]:
    """(height, width) to generate at: ``canvas`` for text; for a keyframe of (width, height),
    its aspect at the canvas's area, each side the nearest multiple of ``multiple``."""
    if keyframe is None:
        return canvas
    area, aspect = canvas[0] * canvas[1], keyframe[0] / keyframe[1]
    height = max(multiple, round(math.sqrt(area / aspect) / multiple) * multiple)
    width = max(multiple, round(math.sqrt(area * aspect) / multiple) * multiple)
    return height, width


def cover(image: Image.Image, width: int, height: int) -> Image.Image:
    """``image`` scaled to cover ``width`` x ``height`` and centre-cropped to it."""
    return ImageOps.fit(image.convert("RGB"), (width, height), Image.Resampling.LANCZOS)
