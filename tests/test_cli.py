from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from PIL import Image

from tests.pictures import textured
from tests.videos import mae, probe


def reelforge(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "REELFORGE_X264_PRESET": "ultrafast"}
    return subprocess.run(
        [sys.executable, "-m", "reelforge", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_render_writes_the_requested_video(tmp_path: Path) -> None:
    first, last = textured(900, 600, seed=1), textured(900, 600, seed=2)
    first.save(tmp_path / "in.png")
    last.save(tmp_path / "end.jpg", quality=95)
    done = reelforge(
        "render",
        "A lighthouse at dusk [Push in]",
        "--image",
        "in.png",
        "--last-image",
        "end.jpg",
        "--duration",
        "3",
        "-o",
        "out.mp4",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "1152x768, 75 frames at 25 fps" in done.stdout
    assert "75/75 frames" in done.stderr  # the progress bar ran to the end
    clip = probe(tmp_path / "out.mp4")
    assert (clip.width, clip.height, len(clip.frames)) == (1152, 768, 75)
    assert mae(clip.frames[0], first.resize((1152, 768), Image.Resampling.LANCZOS)) < 4
    assert mae(clip.frames[-1], last.resize((1152, 768), Image.Resampling.LANCZOS)) < 4


def test_render_refuses_a_bad_image_with_its_flag_named(tmp_path: Path) -> None:
    Image.new("RGB", (1000, 300), (90, 90, 90)).save(tmp_path / "wide.png")
    done = reelforge("render", "x", "--image", "wide.png", cwd=tmp_path)
    assert done.returncode == 2
    assert "--image: image is 1000x300" in done.stderr
    assert not (tmp_path / "out.mp4").exists()


def test_render_refuses_a_length_the_preview_cannot_make(tmp_path: Path) -> None:
    done = reelforge("render", "x", "--duration", "21", cwd=tmp_path)
    assert done.returncode == 2
    assert "--duration" in done.stderr
    assert not (tmp_path / "out.mp4").exists()


def test_invalid_settings_stop_the_start(tmp_path: Path) -> None:
    env_run = subprocess.run(
        [sys.executable, "-m", "reelforge", "render", "x"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "REELFORGE_X264_CRF": "99"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert env_run.returncode == 2
    assert "x264_crf" in env_run.stderr
