"""The Wan engine: Wan 2.1 / 2.2 checkpoints in diffusers layout.

What a checkpoint can be asked follows from its layout, read at load:

| checkpoint       | pipeline (model_index)            | text | first frame | first + last | fps |
|------------------|-----------------------------------|------|-------------|--------------|-----|
| T2V (2.1, 2.2)   | WanPipeline                       | yes  | no          | no           | 16  |
| TI2V-5B (2.2)    | WanPipeline, ``expand_timesteps`` | yes  | yes         | no           | 24  |
| I2V (2.1)        | WanImageToVideoPipeline + CLIP    | no   | yes         | no           | 16  |
| FLF2V (2.1)      | I2V + position embeddings for two | no   | no          | both needed  | 16  |
|                  | images (``pos_embed_seq_len``)    |      |             |              |     |
| I2V-A14B (2.2)   | WanImageToVideoPipeline, no CLIP  | no   | yes         | yes          | 16  |

Frames come in counts of 4k+1 (the VAE's temporal compression), sides in multiples of the
VAE's spatial compression times the patch size: 16, or 32 for TI2V-5B. ``load`` refuses a
registry entry promising more than its checkpoint can do (``WanOptions`` checks the options).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import torch
from diffusers import (
    DiffusionPipeline,
    WanImageToVideoPipeline,
    WanPipeline,
)
from PIL import Image

from reelforge.engines.base import Keyframes, OnStep, request_seed
from reelforge.engines.diffusion import (
    Sampling,
    aspect_canvas,
    canvas_aspect,
    check_fps,
    check_offload,
    checked_canvas,
    contract_frames,
    cover,
    frames_for,
    out_of_memory_guard,
    place,
    sampling,
    speed_up,
    step_callback,
    torch_dtype,
)
from reelforge.engines.options import WanOptions
from reelforge.engines.registry import ENGINES, ModelSpec
from reelforge.errors import InvalidRequest
from reelforge.request import JobRequest
from reelforge.video import Video

NEGATIVE_PROMPT: Final = (
    "Bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, "
    "images, static, overall gray, worst quality, low quality, JPEG compression residue, ugly, "
    "incomplete, extra fingers, poorly drawn hands, poorly drawn faces, deformed, disfigured, "
    "misshapen limbs, fused fingers, still picture, messy background, three legs, many people "
    "in the background, walking backwards"
)
"""The negative prompt of Wan's own examples (English translation)."""
DEFAULTS: Final = Sampling(steps=50, guidance_scale=5.0, negative_prompt=NEGATIVE_PROMPT)


@dataclass(frozen=True)
class Checkpoint:
    """What a loaded Wan checkpoint can be asked (see the module's table)."""

    kind: str
    text: bool
    """Starts from the prompt alone."""
    first_frame: bool
    """Starts from a first frame alone."""
    first_last: bool
    """Runs from a first frame to a last frame."""
    fps: int
    canvas: tuple[int, int]
    """Default generation size, (height, width), landscape."""


class WanEngine:
    """Wan text/image-to-video through diffusers, on the registry entry's device."""

    name = "wan"
    fps = 16
    """Frames per second of the output: 16 (24 for TI2V-5B, or ``options.fps``), set by ``load``."""
    audio = False

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.options = spec.options_as(WanOptions)
        self.pipeline: Any = None
        """The loaded diffusers pipeline (None until ``load``)."""
        self.checkpoint: Checkpoint | None = None
        self.canvas = (0, 0)
        """(height, width) for text-only requests, checked against ``multiple`` at load."""
        self.multiple = 16
        """Each side of the canvas is a multiple of this many pixels."""
        self.frame_step = 4
        """Frame counts are ``frame_step * k + 1``."""
        self._image_pipeline: Any = None
        """TI2V-5B's image pipeline, sharing the text pipeline's parts."""
        self._running: Any = None

    def load(self) -> None:
        """Load the weights once; ``ValueError`` naming the model when the registry entry asks
        for options or abilities the checkpoint (or this machine) cannot give."""
        if self.pipeline is not None:
            return
        spec, options = self.spec, self.options
        check_offload(spec, options)
        pipeline = DiffusionPipeline.from_pretrained(spec.weights, dtype=torch_dtype(spec.dtype))
        checkpoint = _checkpoint(spec, pipeline)
        _check_promises(spec, checkpoint)
        self.multiple = (
            pipeline.vae_scale_factor_spatial * pipeline.transformer.config.patch_size[1]
        )
        self.frame_step = pipeline.vae_scale_factor_temporal
        self.canvas = checked_canvas(spec, spec.canvas or checkpoint.canvas, self.multiple)
        self.fps = options.fps or checkpoint.fps
        if isinstance(pipeline, WanPipeline) and checkpoint.first_frame:
            # TI2V-5B: the same weights start from an image through the image pipeline.
            self._image_pipeline = WanImageToVideoPipeline(
                **{name: getattr(pipeline, name) for name in _SHARED_COMPONENTS},
                boundary_ratio=pipeline.config.boundary_ratio,
                expand_timesteps=True,
            )
            self._image_pipeline.set_progress_bar_config(disable=True)
        place(spec, options, pipeline)
        pipeline.set_progress_bar_config(disable=True)
        speed_up(spec, options, pipeline, timestep=lambda: self._running.current_timestep)
        self.pipeline, self.checkpoint = pipeline, checkpoint

    def generate(self, request: JobRequest, keyframes: Keyframes, on_step: OnStep) -> Video:
        """The video for ``request`` at its size (or the canvas with ``keep_native_size``),
        ``duration_s * fps`` frames at the native rate; ``on_step(step, steps)`` runs after
        each denoising step, and a raise from it stops the work before the VAE decode.
        ``InvalidRequest`` for inputs, a frame rate or options the checkpoint cannot take."""
        if self.checkpoint is None:
            raise RuntimeError(f"model {self.spec.id!r}: call load() before generate()")
        spec, checkpoint = self.spec, self.checkpoint
        first, last = keyframes.first, keyframes.last

        # 1. Frames: the 4k+1 count covering the duration at the native rate.
        check_fps(spec, request, self.fps)
        frame_count = request.duration_s * self.fps
        native_frames = frames_for(request.duration_s, self.fps, step=self.frame_step, offset=1)

        # 2. Canvas: as configured for text; the output's aspect at the same area otherwise.
        height, width = aspect_canvas(self.canvas, canvas_aspect(request, keyframes), self.multiple)

        # 3. Inputs: which pipeline, and the keyframes cover-cropped to the canvas.
        _check_inputs(spec, checkpoint, keyframes)
        pipeline = self.pipeline
        images: dict[str, Image.Image] = {}
        if first is not None:
            pipeline = self._image_pipeline or self.pipeline
            images["image"] = cover(first, width, height)
        if last is not None:
            images["last_image"] = cover(last, width, height)

        # 4. Denoise and decode; a cancel or out-of-memory from a step stops before decoding.
        how = sampling(spec, self.options, request, DEFAULTS)
        steps = how.steps
        seed = request_seed(request)
        self._running = pipeline
        with out_of_memory_guard(spec):
            try:
                clip = pipeline(
                    prompt=request.prompt,
                    negative_prompt=how.negative_prompt,
                    height=height,
                    width=width,
                    num_frames=native_frames,
                    num_inference_steps=steps,
                    guidance_scale=how.guidance_scale,
                    generator=torch.Generator().manual_seed(seed),
                    output_type="np",
                    callback_on_step_end=step_callback(on_step, steps),
                    **images,
                ).frames[0]
            except BaseException:
                # Reset the caches and the offloading, as the end of a finished call does.
                pipeline.maybe_free_model_hooks()
                raise

        # 5. Exactly duration x fps frames, keeping the last one when it is the last keyframe.
        (out_width, out_height), frames = contract_frames(
            clip, request, keyframes, spec, frame_count, keep_last=last is not None
        )

        # 6. The video, with what was generated in its meta.
        return Video(
            width=out_width,
            height=out_height,
            fps=self.fps,
            frame_count=frame_count,
            frames=frames,
            rendered=True,
            meta={
                "engine": self.name,
                "model": spec.id,
                "checkpoint": checkpoint.kind,
                "native_width": width,
                "native_height": height,
                "native_frames": native_frames,
                "fps": self.fps,
                "steps": steps,
                "seed": seed,
            },
        )


_SHARED_COMPONENTS: Final = (
    "tokenizer",
    "text_encoder",
    "vae",
    "scheduler",
    "transformer",
    "transformer_2",
)


def _checkpoint(spec: ModelSpec, pipeline: Any) -> Checkpoint:
    """Read what ``pipeline`` can do from its class and configuration."""
    canvas = (480, 832)
    if isinstance(pipeline, WanPipeline):
        if pipeline.config.expand_timesteps:
            return Checkpoint("TI2V-5B", True, True, False, 24, (704, 1280))
        return Checkpoint("T2V", True, False, False, 16, canvas)
    if isinstance(pipeline, WanImageToVideoPipeline):
        if pipeline.config.expand_timesteps:
            return Checkpoint("TI2V-5B (image only)", False, True, False, 24, (704, 1280))
        transformer = pipeline.transformer or pipeline.transformer_2
        if transformer.config.image_dim is None:
            return Checkpoint("I2V-A14B", False, True, True, 16, canvas)
        if transformer.config.pos_embed_seq_len is not None:
            return Checkpoint("FLF2V", False, False, True, 16, canvas)
        return Checkpoint("I2V", False, True, False, 16, canvas)
    raise ValueError(
        f"model {spec.id!r}: {spec.weights} holds a {type(pipeline).__name__}; the wan engine "
        "serves WanPipeline and WanImageToVideoPipeline checkpoints"
    )


def _check_promises(spec: ModelSpec, checkpoint: Checkpoint) -> None:
    """Refuse a registry entry whose ``first_frame``/``last_frame`` the checkpoint cannot keep
    (the API accepts requests on the strength of those flags)."""
    where = f"model {spec.id!r}: {spec.weights} is a Wan {checkpoint.kind} checkpoint"
    if spec.first_frame and not (checkpoint.first_frame or checkpoint.first_last):
        raise ValueError(f"{where}, which cannot start from an image: set first_frame = false")
    if spec.last_frame and not checkpoint.first_last:
        raise ValueError(f"{where}, which cannot end on an image: set last_frame = false")
    if not (checkpoint.text or checkpoint.first_frame or (spec.first_frame and spec.last_frame)):
        raise ValueError(f"{where}, which needs a first and a last frame: set both to true")
    if not (checkpoint.text or spec.first_frame):
        raise ValueError(f"{where}, which needs a first frame: set first_frame = true")
    if spec.first_frame and not (checkpoint.first_frame or spec.last_frame_required):
        raise ValueError(
            f"{where}, which needs a last frame with every first frame: set "
            "last_frame_required = true"
        )
    if spec.text and not checkpoint.text:
        raise ValueError(f"{where}, which needs a first frame image: set text = false")
    if spec.options_as(WanOptions).fps is None and checkpoint.fps != ENGINES["wan"].fps:
        raise ValueError(
            f"{where}, which makes {checkpoint.fps} fps: set options.fps = {checkpoint.fps} "
            "(GET /v2/models lists the registry's frame rate)"
        )


def _check_inputs(spec: ModelSpec, checkpoint: Checkpoint, keyframes: Keyframes) -> None:
    """Refuse keyframes the checkpoint cannot serve though the API let them through."""
    where = f"model {spec.id!r} (a Wan {checkpoint.kind} checkpoint)"
    if keyframes.first is None and not checkpoint.text:
        raise InvalidRequest("first_frame_image", f"{where} needs a first frame image")
    if keyframes.last is not None and keyframes.first is None:
        raise InvalidRequest(
            "first_frame_image", f"{where} ends on an image only after a first one"
        )
    if keyframes.first is not None and keyframes.last is None and not checkpoint.first_frame:
        raise InvalidRequest("last_image_url", f"{where} needs a last frame image too")
