"""``reelforge worker`` whose preview engine never calls back (a step stuck in a kernel or a
dead lock), for the job timeout's process test: ``python -m tests.stuck_worker``.

It runs ``reelforge.runtime.run_worker(Settings())`` with one patch made here, never in
``src``: ``PreviewEngine.generate`` sleeps without end.
"""

from __future__ import annotations

import threading

from reelforge.engines.base import Keyframes, OnStep
from reelforge.engines.preview import PreviewEngine
from reelforge.request import JobRequest
from reelforge.runtime import run_worker
from reelforge.settings import Settings
from reelforge.video import Video


def stuck(self: PreviewEngine, request: JobRequest, keyframes: Keyframes, on_step: OnStep) -> Video:
    threading.Event().wait()
    raise AssertionError("unreachable")


if __name__ == "__main__":
    PreviewEngine.generate = stuck  # type: ignore[method-assign]
    run_worker(Settings())
