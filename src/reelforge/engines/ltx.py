"""The LTX engine: LTX-Video 0.9.x checkpoints in diffusers layout, through
``LTXConditionPipeline``.

One pipeline serves every request: text alone, or keyframe conditions at frame 0 (the
first frame) and at the last frame. Checkpoints published as ``LTXPipeline`` (the
model_index of LTX-Video 0.9.5 and later) load into it too: the parts are the same.

Frames come in counts of 8k+1 and sides in multiples of 32 (the VAE's compression in time
and space, times the transformer's patch size; read from the checkpoint at load). The
output runs at 24 frames per second, the rate of LTX's own examples; the same rate is
given to the transformer's position embeddings (``frame_rate``), so motion is timed for
the rate the video plays at. ``options.fps`` changes both.
"""

from __future__ import annotations

from typing import Any, Final

import torch
from diffusers import (
    LTXConditionPipeline,
)
from diffusers.pipelines.ltx.pipeline_ltx_condition import (
    LTXVideoCondition,
    linear_quadratic_schedule,
)

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
from reelforge.engines.options import LTXOptions
from reelforge.engines.registry import ModelSpec
from reelforge.request import JobRequest
from reelforge.video import Video

FPS: Final = 24
CANVAS: Final = (512, 896)
"""Default generation size, (height, width): LTX's 512 rows at close to 16:9 (the
pipeline's own 512x704 would stretch a text-only video by 29% on its way to 1366x768)."""
DEFAULTS: Final = Sampling(
    steps=40,
    guidance_scale=3.0,
    negative_prompt="worst quality, inconsistent motion, blurry, jittery, distorted",
)
DECODE_TIMESTEP: Final = 0.05
DECODE_NOISE_SCALE: Final = 0.025
"""Noise added before a timestep-conditioned VAE decodes (LTX 0.9.1 and later)."""


class LTXEngine:
    """LTX-Video text/keyframes-to-video through diffusers, on the registry entry's device."""

    name = "ltx"
    fps = FPS
    """Frames per second of the output (``options.fps`` overrides it at ``load``)."""
    audio = False

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.options = spec.options_as(LTXOptions)
        self.pipeline: Any = None
        """The loaded ``LTXConditionPipeline`` (None until ``load``)."""
        self.canvas = CANVAS
        """(height, width) for text-only requests, checked against ``multiple`` at load."""
        self.multiple = 32
        """Each side of the canvas is a multiple of this many pixels."""
        self.frame_step = 8
        """Frame counts are ``frame_step * k + 1``."""

    def load(self) -> None:
        """Load the weights once; ``ValueError`` naming the model when the registry entry asks
        for options the checkpoint (or this machine) cannot give."""
        if self.pipeline is not None:
            return
        spec, options = self.spec, self.options
        check_offload(spec, options)
        pipeline = LTXConditionPipeline.from_pretrained(spec.weights, dtype=torch_dtype(spec.dtype))
        self.multiple = (
            pipeline.vae_spatial_compression_ratio * pipeline.transformer_spatial_patch_size
        )
        self.frame_step = (
            pipeline.vae_temporal_compression_ratio * pipeline.transformer_temporal_patch_size
        )
        self.canvas = checked_canvas(spec, spec.canvas or CANVAS, self.multiple)
        self.fps = options.fps or FPS
        place(spec, options, pipeline)
        pipeline.set_progress_bar_config(disable=True)
        speed_up(spec, options, pipeline, timestep=lambda: pipeline.current_timestep)
        self.pipeline = pipeline

    def generate(self, request: JobRequest, keyframes: Keyframes, on_step: OnStep) -> Video:
        """The video for ``request`` at its size (or the canvas with ``keep_native_size``),
        ``duration_s * fps`` frames at the native rate; ``on_step(step, steps)`` runs after
        each denoising step, and a raise from it stops the work before the VAE decode.
        ``InvalidRequest`` for a frame rate or options the engine does not take."""
        if self.pipeline is None:
            raise RuntimeError(f"model {self.spec.id!r}: call load() before generate()")
        spec, pipeline = self.spec, self.pipeline
        first, last = keyframes.first, keyframes.last

        # 1. Frames: the 8k+1 count covering the duration at the native rate.
        check_fps(spec, request, self.fps)
        frame_count = request.duration_s * self.fps
        native_frames = frames_for(request.duration_s, self.fps, step=self.frame_step, offset=1)

        # 2. Canvas: as configured for text; the output's aspect at the same area otherwise.
        height, width = aspect_canvas(self.canvas, canvas_aspect(request, keyframes), self.multiple)

        # 3. Inputs: keyframes cover-cropped to the canvas, pinned at the first and last frame.
        conditions = []
        if first is not None:
            conditions.append(LTXVideoCondition(image=cover(first, width, height), frame_index=0))
        if last is not None:
            conditions.append(
                LTXVideoCondition(image=cover(last, width, height), frame_index=native_frames - 1)
            )

        # 4. Denoise and decode; a cancel or out-of-memory from a step stops before decoding.
        how = sampling(spec, self.options, request, DEFAULTS)
        steps = how.steps
        seed = request_seed(request)
        with out_of_memory_guard(spec):
            try:
                clip = pipeline(
                    conditions=conditions or None,
                    prompt=request.prompt,
                    negative_prompt=how.negative_prompt,
                    height=height,
                    width=width,
                    num_frames=native_frames,
                    frame_rate=self.fps,
                    num_inference_steps=steps,
                    # LTX's own schedule, as plain numbers: the pipeline's tensor trips a
                    # NumPy 2 DeprecationWarning inside the scheduler.
                    timesteps=(linear_quadratic_schedule(steps) * 1000).tolist(),
                    guidance_scale=how.guidance_scale,
                    decode_timestep=DECODE_TIMESTEP,
                    decode_noise_scale=DECODE_NOISE_SCALE,
                    generator=torch.Generator().manual_seed(seed),
                    output_type="np",
                    callback_on_step_end=step_callback(on_step, steps),
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
                "native_width": width,
                "native_height": height,
                "native_frames": native_frames,
                "fps": self.fps,
                "steps": steps,
                "seed": seed,
            },
        )
