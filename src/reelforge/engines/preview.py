"""The preview engine: a watchable video that follows every part of a request, with no model.

It emulates the deterministic parts of the reference: the contract's size, length and
frame rate; the first frame (the given image, or a title card designed from the prompt);
the last frame reached along optical flow; and the camera commands. It runs on any CPU and
renders each frame only when the encoder asks for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import cv2
import numpy as np
from PIL import Image, ImageOps

from reelforge.engines.base import Keyframes, OnStep, request_seed
from reelforge.engines.registry import ENGINES, PREVIEW, capabilities
from reelforge.errors import InvalidRequest
from reelforge.media.camera import CameraPath, CameraScript, parse_camera, plan_path
from reelforge.media.intake import source_size
from reelforge.media.morph import Morph
from reelforge.media.sizing import output_size
from reelforge.media.surround import Surround
from reelforge.media.title import title_card
from reelforge.request import JobRequest, Resolution
from reelforge.video import Frame, Video

FPS = ENGINES["preview"].fps
"""The reference's frame rate, for a request without ``fps``."""


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

        # 3. The two ends: the given pictures, or a title card for a missing first frame. A
        #    resolution class has the first frame's aspect: scaled; explicit dimensions may
        #    not: cover-cropped, as the last frame always is.
        if keyframes.first is None:
            first = np.asarray(title_card(script.text or request.prompt, width, height))
        elif isinstance(request.size, Resolution):
            first = _fit(keyframes.first, width, height)
        else:
            first = _cover(keyframes.first, width, height)
        last = _cover(keyframes.last, width, height) if keyframes.last else None

        # 4. The camera path: pinned to the whole picture where a frame is given.
        path = plan_path(
            script,
            frame_count,
            fps,
            seed=seed,
            pinned_start=keyframes.first is not None,
            pinned_end=last is not None,
        )

        # 5. The content of each frame: the still picture, or the way along the morph; where
        #    the camera looks past the picture (pulling back from a first frame), extended.
        pad = path.reach(width, height)
        surround = Surround(width, height, pad) if pad else None
        if last is None:
            content = _still(surround.extend(first) if surround else first)
        else:
            content = _morph_content(first, last, frame_count, surround)

        return Video(
            width=width,
            height=height,
            fps=fps,
            frame_count=frame_count,
            frames=_render(content, path, frame_count, on_step, pad),
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


def _render(
    content: Callable[[int], Frame], path: CameraPath, frame_count: int, on_step: OnStep, pad: int
) -> Iterator[Frame]:
    """Each frame: the camera's view of the content (``pad`` pixels of surround around the
    picture on every side)."""
    for index in range(frame_count):
        canvas = content(index)
        height, width = canvas.shape[0] - 2 * pad, canvas.shape[1] - 2 * pad
        if path.is_still(index):
            picture = np.ascontiguousarray(canvas[pad : pad + height, pad : pad + width])
        else:
            matrix = path.inverse_affine(index, width, height)
            matrix[:, 2] += pad
            picture = cv2.warpAffine(
                canvas,
                matrix,
                (width, height),
                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                borderMode=cv2.BORDER_REFLECT_101,
            )
        on_step(index + 1, frame_count)
        yield picture


def _still(picture: Frame) -> Callable[[int], Frame]:
    return lambda _index: picture


def _morph_content(
    first: Frame, last: Frame, frame_count: int, surround: Surround | None
) -> Callable[[int], Frame]:
    """The morph's frame at each index (eased); with ``surround``, in the middle of the two
    ends' extensions, crossfaded (soft as they are, a crossfade is all they need)."""
    morph = Morph(first, last)
    ends = (surround.extend(first), surround.extend(last)) if surround else None
    pad = surround.pad if surround else 0

    def content(index: int) -> Frame:
        x = index / (frame_count - 1)
        eased = x * x * (3 - 2 * x)
        picture = morph.frame(eased)
        if ends is None:
            return picture
        canvas: Frame = cv2.addWeighted(ends[0], 1 - eased, ends[1], eased, 0)
        canvas[pad : pad + picture.shape[0], pad : pad + picture.shape[1]] = picture
        return canvas

    return content


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
