from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from reelforge.engines.base import Keyframes
from reelforge.engines.preview import PreviewEngine
from reelforge.media.encoder import EncoderOptions, encode_mp4
from reelforge.request import JobRequest
from reelforge.video import Video

FAST = EncoderOptions(preset="ultrafast", crf=18)

# Nothing in the suite may fetch weights from a model hub: the whole session (and the worker
# processes it starts, which inherit the environment) runs with the hubs switched off.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


class Renderer:
    """Renders requests with the preview engine into MP4 files under a temp dir."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0

    def __call__(
        self,
        prompt: str,
        *,
        first_frame: Image.Image | None = None,
        last_frame: Image.Image | None = None,
        **fields: object,
    ) -> tuple[Path, Video]:
        """``fields`` are ``JobRequest``'s (6 s at 768P unless given); the keyframes go in
        decoded, as the worker passes them."""
        request = JobRequest(prompt=prompt, **fields)  # type: ignore[arg-type]
        keyframes = Keyframes(first_frame, last_frame)
        video = PreviewEngine().generate(request, keyframes, lambda done, total: None)
        self.count += 1
        path = self.directory / f"clip{self.count}.mp4"
        encode_mp4(video, path, FAST)
        return path, video


@pytest.fixture
def render(tmp_path: Path) -> Renderer:
    return Renderer(tmp_path)
