"""MiniMax-H3 through diffusers' modular pipeline: text, a first frame, or first and last
frames to a 24 fps video with a stereo 32 kHz soundtrack generated with it.

One checkpoint partition (``transformer/``, the ``fl2va`` workflow) answers text-only and
keyframe requests alike; the omni-reference partition (``transformer_ref/``) is never
loaded. What the checkpoint fixes: 24 fps; clips of 17n+5 frames lasting 5 to 15 s;
canvases in multiples of 32 px, by default 768 px on the short edge with at most
768x1344 px of area; N inference steps are N-1 transformer evaluations; no guidance and
no negative prompt (guidance is distilled into the weights). The pipeline has no step
callback, so ``load`` adds one to each denoising loop.

The hosted prompt rewriter (H3-Context-IR) is not open: prompts are used as written.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import torch
from diffusers import ComponentsManager, MiniMaxH3Blocks
from diffusers.modular_pipelines import (
    InputParam,
    LoopSequentialPipelineBlocks,
    ModularPipelineBlocks,
)
from PIL import Image
from transformers import Qwen2VLImageProcessorPil

from reelforge.engines.base import Keyframes, OnStep, request_seed
from reelforge.engines.diffusion import (
    canvas_aspect,
    check_fps,
    contract_frames,
    frames_for,
    out_of_memory_guard,
    require_accelerator,
    torch_dtype,
)
from reelforge.engines.options import MiniMaxH3Options, request_options
from reelforge.engines.registry import ENGINES, ModelSpec
from reelforge.errors import EngineFailed, InvalidRequest
from reelforge.request import JobRequest
from reelforge.video import Audio, Video

FPS: Final = 24
CLIP_STEP: Final = 17
CLIP_OFFSET: Final = 5
"""The video VAE encodes clips of ``CLIP_STEP * n + CLIP_OFFSET`` frames."""
MIN_SECONDS: Final = 5
MAX_SECONDS: Final = 15
"""Bounds the pipeline sets on a generated clip's length, in seconds."""

CANVAS_MULTIPLE: Final = 32
CANVAS_SHORT_EDGE: Final = 768
CANVAS_MAX_PIXELS: Final = 768 * 1344
MIN_ASPECT: Final = 1 / 4
MAX_ASPECT: Final = 4.0
"""Width / height ratios the checkpoint was trained over."""

DEFAULT_STEPS: Final = 50
WORKFLOW: Final = "fl2va"
"""Loads ``transformer/`` (text-only and keyframe requests), not ``transformer_ref/``."""
OFFLOAD_RESERVE: Final = "12GB"
"""Accelerator memory the auto offload keeps free (diffusers' recipe for one 80 GB card)."""


def generation_frames(duration_s: int) -> int:
    """Frames to generate for ``duration_s`` seconds: duration x 24 snapped up to 17n+5
    (6 s: 144 → 158, 10 s: 240 → 243); ``InvalidRequest`` if those last under 5 or over 15 s."""
    frames = frames_for(duration_s, FPS, step=CLIP_STEP, offset=CLIP_OFFSET)
    if not MIN_SECONDS <= frames / FPS <= MAX_SECONDS:
        raise InvalidRequest(
            "duration",
            f"MiniMax-H3 makes clips of {MIN_SECONDS} to {MAX_SECONDS} s; {duration_s} s "
            f"needs {frames} frames ({frames / FPS:.2f} s)",
        )
    return frames


def default_canvas(aspect_width: float, aspect_height: float) -> tuple[int, int]:
    """The canvas (height, width) in pixels for a picture of that aspect: 768 px on the short
    edge, shrunk to at most 768x1344 px of area, each side rounded to a multiple of 32
    (16:9 → 768x1344, 1:1 → 768x768, 9:16 → 1344x768)."""
    ratio = aspect_width / aspect_height
    if not MIN_ASPECT <= ratio <= MAX_ASPECT:
        raise ValueError(f"MiniMax-H3 needs an aspect ratio from 1:4 to 4:1, got {ratio:.3f}")
    short = float(CANVAS_SHORT_EDGE)
    width, height = (short * ratio, short) if ratio >= 1 else (short, short / ratio)
    shrink = min(1.0, math.sqrt(CANVAS_MAX_PIXELS / (width * height)))
    return _multiple(height * shrink), _multiple(width * shrink)


def _multiple(length: float) -> int:
    return max(CANVAS_MULTIPLE, CANVAS_MULTIPLE * round(length / CANVAS_MULTIPLE))


class MiniMaxH3Engine:
    """MiniMax-H3 on one device: loaded once, then one request at a time."""

    name = "minimax_h3"
    fps = FPS
    audio = True

    def __init__(self, spec: ModelSpec) -> None:
        """Check ``spec`` (weights, canvas, steps, options); ``ValueError`` naming the fault."""
        _check_spec(spec)
        self.spec = spec
        self.options = spec.options_as(MiniMaxH3Options)
        self.pipeline: Any = None
        """The loaded ``MiniMaxH3ModularPipeline``; its components are attributes set at load."""

    def load(self) -> None:
        """Load every component the t2va/fl2va workflows use and place them on the device;
        ``RuntimeError`` naming any component that did not load."""
        if self.pipeline is not None:
            return
        blocks = _blocks_reporting_steps()
        offload = self.options.cpu_offload == "model"
        manager = ComponentsManager() if offload else None
        pipeline: Any = blocks.init_pipeline(self.spec.weights, components_manager=manager)
        # A component that fails to load is only logged; the check below refuses to start.
        pipeline.load_components(workflow=WORKFLOW, dtype=torch_dtype(self.spec.dtype))
        if pipeline.processor is None and importlib.util.find_spec("torchvision") is None:
            _register_keyframe_processor(pipeline)  # the processor needs torchvision to load
        expected = blocks.get_workflow(WORKFLOW).expected_components
        missing = sorted({c.name for c in expected if getattr(pipeline, c.name, None) is None})
        if missing:
            raise RuntimeError(
                f"model {self.spec.id!r}: MiniMax-H3 component(s) {', '.join(missing)} did not "
                f"load from {self.spec.weights!r} (the log above says why); a local copy needs "
                "each component's folder"
            )
        if manager is not None:
            manager.enable_auto_cpu_offload(
                device=self.spec.device, memory_reserve_margin=OFFLOAD_RESERVE
            )
        else:
            pipeline.to(self.spec.device)
        if self.options.vae_tiling is True:
            pipeline.vae.enable_tiling()
        elif self.options.vae_tiling is False:
            pipeline.vae.disable_tiling()
        if self.options.attention_backend is not None:
            pipeline.transformer.set_attention_backend(self.options.attention_backend)
        self.pipeline = pipeline

    def generate(self, request: JobRequest, keyframes: Keyframes, on_step: OnStep) -> Video:
        """The video and soundtrack for ``request``, ``duration_s * 24`` frames at its size
        (or the canvas with ``keep_native_size``); ``on_step(evaluations_done, evaluations)``
        runs after each denoising step, and a raise from it stops the work before the decode.
        ``InvalidRequest`` for a duration, frame rate or option the model cannot take."""
        if self.pipeline is None:
            raise RuntimeError(f"model {self.spec.id!r}: generate() before load()")
        # 1. Frames: the request's count, and the 17n+5 the model makes to cover it.
        check_fps(self.spec, request, FPS)
        frame_count = request.duration_s * FPS
        native_frames = generation_frames(request.duration_s)

        # 2. Canvas: the registry's, or 768 px on the short edge in the output's aspect.
        aspect = canvas_aspect(request, keyframes) or (16, 9)
        height, width = self.spec.canvas or default_canvas(*aspect)

        # 3. Keyframes: centre-cropped to the canvas's aspect (the pipeline would stretch them).
        first = _crop_to_aspect(keyframes.first, width, height) if keyframes.first else None
        last = _crop_to_aspect(keyframes.last, width, height) if keyframes.last else None

        # 4. Denoise and decode, video and audio together. The prompt goes in as written.
        steps = _steps(self.spec, request)
        seed = request_seed(request)

        def report(index: int, evaluations: int) -> None:
            try:
                on_step(index + 1, evaluations)
            except Exception as exc:
                raise _Stop(exc) from exc

        with out_of_memory_guard(self.spec):
            try:
                state = self.pipeline(
                    prompt=request.prompt,
                    image=first,
                    last_image=last,
                    num_frames=native_frames,
                    height=height,
                    width=width,
                    num_inference_steps=steps,
                    generator=torch.Generator().manual_seed(seed),
                    output_type="np",
                    step_callback=report,
                )
            except _Stop as stop:
                raise stop.cause from None

        # 5. Trim to the contract: duration x 24 frames, duration x 32 000 samples a channel.
        clip = state.get("videos")[0]
        rate = int(state.get("sampling_rate"))
        sound = state.get("audio")[0].float().cpu().numpy()
        sample_count = request.duration_s * rate
        if clip.shape[0] < frame_count or sound.shape[1] < sample_count:
            raise EngineFailed(
                f"MiniMax-H3 made {clip.shape[0]} frames and {sound.shape[1]} samples; "
                f"{frame_count} frames and {sample_count} samples were needed"
            )
        (out_width, out_height), frames = contract_frames(
            clip, request, keyframes, self.spec, frame_count
        )
        samples = np.ascontiguousarray(sound[:, :sample_count], dtype=np.float32)

        # 6. The video, with what was made natively.
        return Video(
            width=out_width,
            height=out_height,
            fps=FPS,
            frame_count=frame_count,
            frames=frames,
            rendered=True,
            audio=Audio(samples, rate),
            meta={
                "engine": self.name,
                "model": self.spec.id,
                "native_width": width,
                "native_height": height,
                "native_frames": int(clip.shape[0]),
                "fps": FPS,
                "steps": steps,
                "sample_rate": rate,
                "seed": seed,
            },
        )


def _steps(spec: ModelSpec, request: JobRequest) -> int:
    """Inference steps: the request's, else the registry's, else 50; ``InvalidRequest`` below 2."""
    asked = request_options(request.options, ENGINES["minimax_h3"].request_options)
    steps = asked.num_inference_steps or spec.steps or DEFAULT_STEPS
    if steps < 2:
        raise InvalidRequest(
            "options.num_inference_steps", f"{steps}: N steps are N-1 evaluations, use >= 2"
        )
    return steps


def _crop_to_aspect(image: Image.Image, width: int, height: int) -> Image.Image:
    """The largest centred part of ``image`` with the aspect of ``width`` x ``height``, RGB,
    at the image's own resolution."""
    scale = min(image.width / width, image.height / height)
    crop = (max(1, round(width * scale)), max(1, round(height * scale)))
    left, top = (image.width - crop[0]) // 2, (image.height - crop[1]) // 2
    return image.convert("RGB").crop((left, top, left + crop[0], top + crop[1]))


def _check_spec(spec: ModelSpec) -> None:
    """Refuse, before anything loads, a spec this engine cannot honour (pydantic has checked
    the names and types)."""
    where = f"model {spec.id!r}"
    if spec.steps is not None and spec.steps < 2:
        raise ValueError(f"{where}: steps = {spec.steps}; N steps are N-1 evaluations, use >= 2")
    if spec.canvas is not None:
        height, width = spec.canvas
        if (
            min(height, width) < CANVAS_MULTIPLE
            or height % CANVAS_MULTIPLE
            or width % CANVAS_MULTIPLE
        ):
            raise ValueError(
                f"{where}: canvas {list(spec.canvas)} must be [height, width] in multiples of "
                f"{CANVAS_MULTIPLE} px"
            )
        if not MIN_ASPECT <= width / height <= MAX_ASPECT:
            raise ValueError(f"{where}: canvas {list(spec.canvas)} is not within 1:4 to 4:1")
    if spec.options_as(MiniMaxH3Options).cpu_offload:
        require_accelerator(spec, "cpu_offload")


class _Stop(BaseException):
    """Carries a raise from ``on_step`` (a cancel) out of the pipeline, which logs every
    ``Exception`` crossing one of its blocks as an error, traceback and all."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(cause)
        self.cause = cause


class _ReportStep(ModularPipelineBlocks):  # type: ignore[misc]  # an untyped diffusers base
    """The last leaf of a denoising loop: ``step_callback(index, evaluations)`` after the
    scheduler step, so progress is reported and a raise leaves the loop before the decode."""

    @property
    def description(self) -> str:
        return "Calls `step_callback(index, len(timesteps))` after each scheduler step."

    @property
    def inputs(self) -> list[InputParam]:
        return [
            InputParam("step_callback", description="Called after each step; may raise."),
            InputParam("timesteps", required=True, description="One per transformer call."),
        ]

    def __call__(
        self, components: Any, block_state: Any, i: int, t: torch.Tensor
    ) -> tuple[Any, Any]:
        if block_state.step_callback is not None:
            block_state.step_callback(i, len(block_state.timesteps))
        return components, block_state


def _blocks_reporting_steps() -> Any:
    """Fresh ``MiniMaxH3Blocks`` whose denoising loops (t2va, fl2va, ref2va) each end with a
    ``_ReportStep`` and show no progress bar (the pipeline's own switch does not reach them)."""
    blocks = MiniMaxH3Blocks()
    pending: list[Any] = [blocks]
    loops = 0
    while pending:
        for block in pending.pop().sub_blocks.values():
            if isinstance(block, LoopSequentialPipelineBlocks):
                block.sub_blocks["report_step"] = _ReportStep()
                block.set_progress_bar_config(disable=True)
                loops += 1
            else:
                pending.append(block)
    if loops == 0:
        raise RuntimeError("MiniMaxH3Blocks has no denoising loop to report steps from")
    return blocks


@dataclass(frozen=True)
class KeyframeProcessor:
    """Stands in for ``Qwen3VLProcessor`` where torchvision is missing.

    transformers 5.23 cannot build that processor without torchvision (its video processor
    needs it), and a CPU-only torch 2.13 has no torchvision build to match. The t2va and
    fl2va blocks use two parts of it, both here: ``image_processor`` (keyframes to vision
    patches, with PIL instead of torchvision: resizing may differ slightly) and
    ``create_mm_token_type_ids``. Reference videos (ref2va) would need the real one.
    """

    image_processor: Any
    image_token_ids: list[int] = field(default_factory=list)
    video_token_ids: list[int] = field(default_factory=list)

    def create_mm_token_type_ids(self, input_ids: list[list[int]]) -> list[list[int]]:
        """Per token: 1 for an image pad, 2 for a video pad, 0 for text."""
        return [[self._kind(token) for token in row] for row in input_ids]

    def _kind(self, token: int) -> int:
        return 1 if token in self.image_token_ids else 2 if token in self.video_token_ids else 0


def _register_keyframe_processor(pipeline: Any) -> None:
    """Give ``pipeline`` a ``KeyframeProcessor`` built from the repository's ``processor/``
    settings; leave it without one if they cannot be read (the load check names it)."""
    spec = pipeline.get_component_spec("processor")
    if pipeline.tokenizer is None or spec.pretrained_model_name_or_path is None:
        return
    try:
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(
            spec.pretrained_model_name_or_path, subfolder=spec.subfolder, revision=spec.revision
        )
    except OSError:
        return
    token = pipeline.tokenizer.convert_tokens_to_ids
    pipeline.update_components(
        processor=KeyframeProcessor(
            image_processor,
            image_token_ids=[token("<|image_pad|>")],
            video_token_ids=[token("<|video_pad|>")],
        )
    )
