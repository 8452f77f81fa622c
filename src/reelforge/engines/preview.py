"""The preview engine: a deterministic stand-in for a model, for development and tests.

It follows the request's deterministic parts: the contract's size, length and frame rate;
the first frame (the given image, or a title card showing the prompt); the last frame,
reached along optical flow; the camera commands; and the seed. It does not depict the scene
the prompt describes. It runs on any CPU and renders each frame only when the encoder asks
for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import cv2
import numpy as np
from PIL import Image, ImageOps

from reelforge.engines.base import Keyframes, OnStep, request_seed
from reelforge.engines.registry import ENGINES, PREVIEW, capabilities
from reelforge.errors import InvalidRequest
from reelforge.media.camera import CameraPath, CameraScript, FloatArray, parse_camera, plan_path
from reelforge.media.intake import source_size
from reelforge.media.morph import Morph, look
from reelforge.media.sizing import output_size
from reelforge.media.surround import Surround
from reelforge.media.title import Lettered, gradient, title_card
from reelforge.request import JobRequest, Resolution
from reelforge.video import Frame, Video

FPS = ENGINES["preview"].fps
"""The reference's frame rate, for a request without ``fps``."""
_HELD = 0.25
"""A title's text is held still on screen when the part of the card every frame shows is
smaller than this share of the frame's height on either side."""


class PreviewEngine:
    """Camera moves over a still (or morphing) picture, rendered frame by frame."""

    name = "preview"

    def __init__(self, scale: float = 1.0) -> None:
        """``scale`` < 1 renders every video smaller than the contract's size, by that factor
        (an operator's setting for load and crash tests; the real size is in ``meta``)."""
        if not 0 < scale <= 1:
            raise ValueError(f"preview scale must be in (0, 1], got {scale}")
        self.scale = scale

    def load(self) -> None:
        """Nothing to load: the engine needs no weights."""

    def generate(self, request: JobRequest, keyframes: Keyframes, on_step: OnStep) -> Video:
        """The video for ``request``: ``duration_s * fps`` frames (``fps``: the request's, else
        25) at its size; ``on_step(frames_done, frame_count)`` runs per frame as the frames
        are iterated. ``InvalidRequest`` for a size, duration or rate outside the capabilities
        (even sides from 256 px short to 2700 px long, 1 to 20 s, 8 to 60 fps)."""
        # 1. Read the camera commands (the API already refused bad ones).
        script = parse_camera(request.prompt)
        seed = request_seed(request)
        fps = FPS if request.fps is None else request.fps
        frame_count = request.duration_s * fps

        # 2. The size: the request's; a resolution class takes the keyframe's aspect (16:9
        #    for text alone).
        keyframe = keyframes.any
        width, height = output_size(request.size, source_size(keyframe) if keyframe else None)
        _check(request, width, height)
        if self.scale != 1:
            width, height = (max(16, 2 * round(side * self.scale / 2)) for side in (width, height))

        # 3. The camera path: pinned to the whole picture where a frame is given.
        path = plan_path(
            script,
            frame_count,
            fps,
            seed=seed,
            pinned_start=keyframes.first is not None,
            pinned_end=keyframes.last is not None,
        )

        # 4. The two ends: the given pictures, or a title card for a missing first frame, its
        #    text inside the part of the card the camera keeps in view (held still on screen
        #    when the moves keep too little in view). A resolution class has the first frame's
        #    aspect: scaled; explicit dimensions may not: cover-cropped, as the last frame
        #    always is.
        overlay = None
        if keyframes.first is None:
            text = script.text or request.prompt
            steady = path.steady_view(width, height)
            if steady is None or min(steady[2] - steady[0], steady[3] - steady[1]) < _HELD * height:
                first, overlay = gradient(text, width, height), Lettered(text, width, height)
            else:
                first = title_card(text, width, height, steady)
        elif isinstance(request.size, Resolution):
            first = _fit(keyframes.first, width, height)
        else:
            first = _cover(keyframes.first, width, height)
        last = _cover(keyframes.last, width, height) if keyframes.last else None

        # 5. The content: the still picture, or the morph from first to last; where the
        #    camera looks past the picture (pulling back from a first frame), extended.
        pad = path.reach(width, height)
        surround = Surround(width, height, pad) if pad else None
        extend = surround.extend if surround else (lambda picture: picture)
        if last is None:
            view = _still(extend(first), width, height, pad)
        else:
            view = _morphing(Morph(extend(first), extend(last)), frame_count, width, height)

        return Video(
            width=width,
            height=height,
            fps=fps,
            frame_count=frame_count,
            frames=_render(view, path, (width, height, pad), frame_count, on_step, overlay),
            meta=_meta(script, width, height, fps, seed),
        )


def _check(request: JobRequest, width: int, height: int) -> None:
    """Refuse what the preview's capabilities do not offer (the API refuses it at submit,
    from the same capabilities)."""
    can = capabilities(PREVIEW)
    refused = can.timing_refusal(request, "the preview engine")
    if refused is not None:
        field, reason = refused
        raise InvalidRequest("duration" if field == "duration_s" else field, reason)
    problem = can.size_refusal(width, height)
    if problem is not None:
        raise InvalidRequest("size", f"{width}x{height}: {problem}")


View = Callable[[int, "FloatArray | None"], Frame]
"""The content of frame ``index`` seen through the camera: the 2x3 matrix from output pixels
to the content's (surround included), or None where the camera shows the whole picture."""


def _render(
    view: View,
    path: CameraPath,
    size: tuple[int, int, int],
    frame_count: int,
    on_step: OnStep,
    overlay: Lettered | None,
) -> Iterator[Frame]:
    """Each frame: the camera's view of the content (``size``: width, height and the
    surround's pad in pixels), with ``overlay`` held still on it."""
    width, height, pad = size
    for index in range(frame_count):
        camera = None
        if not path.is_still(index):
            camera = path.inverse_affine(index, width, height)
            camera[:, 2] += pad
        picture = view(index, camera)
        on_step(index + 1, frame_count)
        yield picture if overlay is None else overlay.over(picture)


def _still(canvas: Frame, width: int, height: int, pad: int) -> View:
    four = cv2.cvtColor(canvas, cv2.COLOR_RGB2RGBA)  # OpenCV warps four channels faster

    def view(_index: int, camera: FloatArray | None) -> Frame:
        if camera is None:
            return np.ascontiguousarray(canvas[pad : pad + height, pad : pad + width])
        return look(four, camera, width, height)

    return view


def _morphing(morph: Morph, frame_count: int, width: int, height: int) -> View:
    """The morph's frame at each index, eased (zero speed at both ends)."""
    pad = (morph.height - height) // 2
    whole = np.array([[1, 0, pad], [0, 1, pad]], np.float32)

    def view(index: int, camera: FloatArray | None) -> Frame:
        x = index / (frame_count - 1)
        return morph.frame(x * x * (3 - 2 * x), whole if camera is None else camera, width, height)

    return view


def _fit(image: Image.Image, width: int, height: int) -> Frame:
    """``image`` scaled to exactly ``width`` x ``height`` (same aspect up to even rounding)."""
    return np.asarray(image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS))


def _cover(image: Image.Image, width: int, height: int) -> Frame:
    """``image`` scaled to cover ``width`` x ``height`` and centre-cropped to it."""
    return np.asarray(ImageOps.fit(image.convert("RGB"), (width, height), Image.Resampling.LANCZOS))


def _meta(script: CameraScript, width: int, height: int, fps: int, seed: int) -> dict[str, object]:
    return {
        "engine": "preview",
        "fps": fps,
        "width": width,
        "height": height,
        "seed": seed,
        "camera": [[m.value for m in shot] for shot in script.shots],
    }
