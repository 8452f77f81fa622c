"""Each class of image that once cost gigabytes or minutes is answered within the intake's
bounds (under 2 s of CPU and 256 MiB above the process's size before the decode), and a real
48-megapixel photograph is still accepted within them.

Each case runs ``load_image`` in a fresh Python process fed the file on stdin, which reports
its outcome, its CPU time and the peak of its resident memory (``VmHWM``, reset just before
the decode) above its resident size before it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tests import hostile_images as hostile

MAX_CPU_S = 2.0
MAX_EXTRA_MIB = 256
MEASURE = """
import json, resource, sys
from concurrent.futures import ThreadPoolExecutor
from reelforge.errors import InvalidImage
from reelforge.media.intake import load_image, source_size

def status(name):
    line = next(l for l in open("/proc/self/status") if l.startswith(name + ":"))
    return int(line.split()[1]) / 1024

data = sys.stdin.buffer.read()
open("/proc/self/clear_refs", "w").write("5")  # resets VmHWM to the current size
before, start = status("VmRSS"), resource.getrusage(resource.RUSAGE_SELF)
def answer(_: object = None):
    try:
        image = load_image(data, field="first_frame_image")
        return {"size": image.size, "source": source_size(image)}
    except InvalidImage as exc:
        return {"refused": exc.message}

with ThreadPoolExecutor(int(sys.argv[1])) as pool:  # that many at once, the same outcome
    outcome, *others = pool.map(answer, range(int(sys.argv[1])))
assert all(other == outcome for other in others)
end = resource.getrusage(resource.RUSAGE_SELF)
cpu = end.ru_utime + end.ru_stime - start.ru_utime - start.ru_stime
print(json.dumps({**outcome, "cpu_s": cpu, "extra_mib": status("VmHWM") - before}))
"""


@dataclass(frozen=True)
class Measured:
    outcome: dict[str, object]
    cpu_s: float
    extra_mib: float


def measured(data: bytes, at_once: int = 1) -> Measured:
    """``load_image(data)`` in a fresh process, ``at_once`` calls in threads: the outcome,
    CPU seconds and extra MiB."""
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(at_once)],
        input=data,
        capture_output=True,
        check=True,
        timeout=120,
    )
    report = json.loads(done.stdout)
    cpu_s, extra_mib = report.pop("cpu_s"), report.pop("extra_mib")
    return Measured(report, cpu_s, extra_mib)


def within_bounds(result: Measured) -> None:
    assert result.cpu_s < MAX_CPU_S, result
    assert result.extra_mib < MAX_EXTRA_MIB, result


@pytest.mark.parametrize(
    ("make", "refusal"),
    [
        pytest.param(
            hostile.claimed_jpeg,
            "JPEG has 7 bytes of image data, fewer than the 237446 its 9000x9000 pixels need",
            id="few-KB JPEG claiming 9000x9000",
        ),
        pytest.param(
            hostile.blank_png,
            "image of 9400x9400 needs 200 MiB to decode; the limit is 128 MiB",
            id="11 KB 1-bit PNG of 9400x9400",
        ),
        pytest.param(
            lambda: hostile.blank_png(9400, 9400, 8, 2),
            "image of 9400x9400 needs 462 MiB to decode",
            id="250 KB RGB PNG of 9400x9400",
        ),
        pytest.param(hostile.scan_bomb, "JPEG has more than 100 scans", id="progressive scan bomb"),
        pytest.param(
            lambda: hostile.scan_bomb(6000, 90),
            "JPEG scans visit 55125000 blocks of 8x8 pixels; at most 15000000",
            id="90-scan progressive 6000x6000",
        ),
        pytest.param(
            hostile.jpeg_marker_flood,
            "JPEG has more than 2000 marker segments",
            id="20 MB of JPEG segments",
        ),
        pytest.param(
            lambda: hostile.jpeg_marker_flood(10_000_000, b"\xff\x01"),
            "JPEG has more than 2000 marker segments",
            id="20 MB of JPEG TEM markers",
        ),
        pytest.param(
            hostile.png_chunk_flood, "PNG has more than 20000 chunks", id="20 MB of PNG chunks"
        ),
    ],
)
def test_an_attack_is_refused_within_bounds(make: Callable[[], bytes], refusal: str) -> None:
    result = measured(make())
    refused = result.outcome.get("refused")
    assert isinstance(refused, str)
    assert refused.startswith(f"first_frame_image: {refusal}")
    within_bounds(result)


def test_a_truncated_jpeg_that_passes_the_data_check_is_decoded_small() -> None:
    """Half a 9000x9000 JPEG's data: libjpeg fills in the rest, at 1/2 scale (4500x4500)."""
    result = measured(hostile.truncated_jpeg())
    assert result.outcome == {"size": [4500, 4500], "source": [9000, 9000]}
    within_bounds(result)


def test_six_at_once_hold_one_decode_budget() -> None:
    """Each takes ~80 MiB: six together would take up to 480 MiB, and six threads' malloc
    arenas would keep as much once freed; one decodes at a time, on the intake's thread."""
    result = measured(hostile.truncated_jpeg(), at_once=6)
    assert result.outcome == {"size": [4500, 4500], "source": [9000, 9000]}
    assert result.extra_mib < MAX_EXTRA_MIB, result


def test_an_exif_bomb_is_read_within_bounds() -> None:
    result = measured(hostile.exif_bomb())
    assert result.outcome == {"size": [400, 400], "source": [400, 400]}
    within_bounds(result)


def test_a_48_megapixel_photo_of_15_mb_is_accepted_within_bounds() -> None:
    data = hostile.photo()
    assert 12 * hostile.MIB < len(data) < 20 * hostile.MIB
    result = measured(data)
    assert result.outcome == {"size": [4000, 3000], "source": [8000, 6000]}
    within_bounds(result)


def test_a_progressive_jpeg_just_within_the_scan_limits_is_decoded_within_bounds() -> None:
    """3200x3200 with 90 scans: 14.1 million blocks visited, just under the limit."""
    result = measured(hostile.scan_bomb(3200, 80))
    assert result.outcome == {"size": [3200, 3200], "source": [3200, 3200]}
    within_bounds(result)


def test_a_progressive_jpeg_is_decoded_smaller_where_its_coefficients_need_the_room() -> None:
    """4600x4600, 10 scans: its coefficients take 61 MiB of the 128, so it is decoded at half
    scale, below 2700 px."""
    result = measured(hostile.scan_bomb(4600, 0))
    assert result.outcome == {"size": [2300, 2300], "source": [4600, 4600]}
    within_bounds(result)
