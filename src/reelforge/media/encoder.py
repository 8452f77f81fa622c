"""MP4 encoding with PyAV: H.264 yuv420p (+ AAC audio), ``+faststart``, written atomically.

Frames are encoded as they arrive, so a clip is never held whole in memory. The file is
written under a temporary name beside ``path`` and renamed when complete: a reader never
sees a partial video.
"""

from __future__ import annotations

import os
import queue
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from reelforge.video import Audio, Frame, Video


@dataclass(frozen=True)
class EncoderOptions:
    """libx264 settings: ``preset`` trades speed for size, ``crf`` is quality (lower: better)."""

    preset: str = "veryfast"
    crf: int = 20


OnEncoded = Callable[[int, int], None]
"""``on_encoded(done, total)``: frames encoded so far, of ``total``; called as the encoder
hands out packets (libx264 holds a few frames back, so it lags the frames fed in)."""


def encode_mp4(
    video: Video,
    path: Path,
    options: EncoderOptions = EncoderOptions(),
    on_encoded: OnEncoded | None = None,
) -> None:
    """Encode ``video`` to ``path``; nothing is left at ``path`` if encoding fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(handle)
    try:
        _write(video, Path(temporary), options, on_encoded or (lambda done, total: None))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _write(video: Video, path: Path, options: EncoderOptions, on_encoded: OnEncoded) -> None:
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=video.fps)
        stream.width, stream.height = video.width, video.height
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": options.preset, "crf": str(options.crf)}
        _tag_bt601(stream.codec_context)
        audio = _add_audio(container, video.audio)
        encoded = 0
        for index, packed in enumerate(_read_ahead(_checked(video))):
            av_frame = av.VideoFrame.from_ndarray(packed, format="yuv420p")
            av_frame.pts = index
            packets = stream.encode(av_frame)
            container.mux(packets)
            if packets:
                encoded += len(packets)
                on_encoded(encoded, video.frame_count)
        container.mux(stream.encode(None))
        on_encoded(video.frame_count, video.frame_count)
        if audio is not None and video.audio is not None:
            _encode_audio(container, audio, video.audio, video.duration_s)


_SMPTE170M = 6
"""FFmpeg's code for BT.601 (SMPTE 170M) in primaries, transfer and matrix alike."""
_LIMITED_RANGE = 1


def _tag_bt601(context: av.video.codeccontext.VideoCodecContext) -> None:
    """Say what OpenCV's RGB→I420 produces (BT.601, limited range); players would otherwise
    assume BT.709 for HD sizes and shift the colours."""
    context.colorspace = _SMPTE170M
    context.color_primaries = _SMPTE170M
    context.color_trc = _SMPTE170M
    context.color_range = _LIMITED_RANGE


_READ_AHEAD = 4
"""Frames rendered ahead of the encoder, on their own thread (the engine's work and
libx264's overlap; both release the GIL)."""


def _read_ahead(frames: Iterator[Frame]) -> Iterator[Frame]:
    """``frames`` converted to I420, produced on a thread up to ``_READ_AHEAD`` frames ahead.

    An exception raised while producing (an engine error, a cancel from ``on_step``) is
    raised here, in the consumer; if the consumer stops early, the producer stops too.
    """
    slots: queue.Queue[tuple[Frame | None, BaseException | None]] = queue.Queue(_READ_AHEAD)
    stop = threading.Event()

    def offer(item: tuple[Frame | None, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.05)
            except queue.Full:
                continue
            return True
        return False

    def produce() -> None:
        try:
            for frame in frames:
                if not offer((cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420), None)):
                    return
            offer((None, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
            offer((None, exc))

    producer = threading.Thread(target=produce, name="reelforge-frames", daemon=True)
    producer.start()
    try:
        while True:
            packed, error = slots.get()
            if error is not None:
                raise error
            if packed is None:
                return
            yield packed
    finally:
        stop.set()
        producer.join()


def _checked(video: Video) -> Iterator[Frame]:
    """The frames, with the promised count and shape enforced (an engine bug fails loudly)."""
    expected = (video.height, video.width, 3)
    count = 0
    for frame in video.frames:
        if frame.shape != expected or frame.dtype != np.uint8:
            raise ValueError(f"frame {count} is {frame.shape} {frame.dtype}; expected {expected}")
        count += 1
        if count > video.frame_count:
            raise ValueError(f"engine produced more than {video.frame_count} frames")
        yield frame
    if count != video.frame_count:
        raise ValueError(f"engine produced {count} frames; expected {video.frame_count}")


def _add_audio(
    container: av.container.OutputContainer, audio: Audio | None
) -> av.AudioStream | None:
    if audio is None:
        return None
    layout = "stereo" if audio.samples.shape[0] == 2 else "mono"
    return container.add_stream("aac", rate=audio.sample_rate, layout=layout)


def _encode_audio(
    container: av.container.OutputContainer, stream: av.AudioStream, audio: Audio, seconds: float
) -> None:
    """Mux ``audio`` trimmed to ``seconds`` so sound and picture end together."""
    samples = audio.samples[:, : round(seconds * audio.sample_rate)]
    chunk = 1024
    for start in range(0, samples.shape[1], chunk):
        piece = np.ascontiguousarray(samples[:, start : start + chunk], dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout=stream.layout.name)
        frame.sample_rate = audio.sample_rate
        frame.pts = start
        frame.time_base = Fraction(1, audio.sample_rate)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
