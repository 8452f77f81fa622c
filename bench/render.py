"""Preview render speed: time, ratio to PyAV's bare encode of the same frames, real-time
factor and peak RSS, for a 6 s 768P and a 10 s 1080P clip.

Run: ``python bench/render.py [--only NAME] [--rounds N]`` (with ``--rounds``, renders and
floors take turns and each figure is the least of its rounds, which steadies the ratios on a
busy machine). Each render runs in a fresh process (so its peak RSS is its
own); the floor encodes the very frames the render produced, decoded back into memory
beforehand, with the same encoder settings.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image

from reelforge.engines.base import Keyframes
from reelforge.engines.preview import PreviewEngine
from reelforge.media.encoder import EncoderOptions, encode_mp4
from reelforge.request import JobRequest, Resolution


@dataclass(frozen=True)
class Case:
    name: str
    prompt: str
    duration_s: int
    resolution: Resolution
    with_image: bool
    with_last: bool = False


CASES = (
    Case("6 s 768P text", "A lighthouse at dusk [Truck left, Zoom in]", 6, Resolution.P768, False),
    Case("6 s 768P image", "A lighthouse at dusk [Pan right] [Shake]", 6, Resolution.P768, True),
    Case(
        "10 s 1080P image",
        "A lighthouse at dusk [Push in, Pedestal up]",
        10,
        Resolution.P1080,
        True,
    ),
    Case("6 s 768P first+last", "A lighthouse at dusk", 6, Resolution.P768, True, True),
)


def picture(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 40, width // 40, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)


def render_once(index: int, output: Path) -> None:
    """In a child process: render case ``index`` and print its figures as JSON."""
    case = CASES[index]
    size = (1920, 1080) if case.resolution is Resolution.P1080 else (1366, 768)
    buffer = io.BytesIO()
    picture(*size, seed=1).save(buffer, "PNG")
    first = Image.open(io.BytesIO(buffer.getvalue())) if case.with_image else None
    last = picture(*size, seed=2) if case.with_last else None
    started, cpu = time.perf_counter(), cpu_seconds()
    request = JobRequest(case.prompt, case.duration_s, case.resolution)
    video = PreviewEngine().generate(request, Keyframes(first, last), lambda done, total: None)
    encode_mp4(video, output, EncoderOptions())
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    print(json.dumps({"seconds": seconds, "cpu": cpu, "peak_mb": peak_rss_mb()}))


def cpu_seconds() -> float:
    """CPU time this process has used so far, all threads (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM; unlike ru_maxrss it is not inherited from the
    parent across fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def floor_seconds(clip: Path) -> tuple[float, float]:
    """Time and CPU time PyAV takes to encode the clip's own frames (already in memory) the
    same way."""
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        width, height, fps = stream.width, stream.height, int(stream.average_rate or 25)
        frames = [f.reformat(format="yuv420p").to_ndarray() for f in container.decode(stream)]
    options = EncoderOptions()
    started, cpu = time.perf_counter(), cpu_seconds()
    with av.open(
        str(clip.with_suffix(".floor.mp4")), "w", options={"movflags": "+faststart"}
    ) as out:
        encoder = out.add_stream("libx264", rate=fps)
        encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
        encoder.options = {"preset": options.preset, "crf": str(options.crf)}
        for index, planes in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            frame.pts = index
            out.mux(encoder.encode(frame))
        out.mux(encoder.encode(None))
    return time.perf_counter() - started, cpu_seconds() - cpu


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1].isdigit():
        render_once(int(sys.argv[1]), Path(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default="", help="run only the cases whose name has this")
    parser.add_argument("--rounds", type=int, default=1, help="render and floor taking turns")
    args = parser.parse_args()
    print("case                    render s  floor s  x floor  x realtime  peak RSS  CPU x floor")
    with tempfile.TemporaryDirectory() as directory:
        for index, case in enumerate(CASES):
            if args.only in case.name:
                measure(index, case, Path(directory) / f"case{index}.mp4", args.rounds)


def measure(index: int, case: Case, clip: Path, rounds: int) -> None:
    """Print the case's figures: each the least of ``rounds`` turns of render then floor.
    CPU time (all threads) is steadier than wall time on a shared machine: both are shown."""
    renders, floors = [], []
    for _ in range(rounds):
        child = subprocess.run(
            [sys.executable, __file__, str(index), str(clip)],
            check=True,
            capture_output=True,
            text=True,
        )
        renders.append(json.loads(child.stdout))
        floors.append(floor_seconds(clip))
    seconds, cpu = min(r["seconds"] for r in renders), min(r["cpu"] for r in renders)
    floor, floor_cpu = min(f[0] for f in floors), min(f[1] for f in floors)
    print(
        f"{case.name:22} {seconds:9.2f} {floor:8.2f} {seconds / floor:7.2f}x "
        f"{case.duration_s / seconds:10.1f}x {max(r['peak_mb'] for r in renders):7.0f} MB "
        f"{cpu / floor_cpu:7.2f}x"
    )


if __name__ == "__main__":
    main()
