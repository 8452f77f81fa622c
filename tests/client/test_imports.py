"""The SDK and the CLI's client commands are light: importing them loads neither the server
(FastAPI, Starlette, the worker) nor the media stack (OpenCV, PyAV)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("fastapi", "starlette", "cv2", "av", "reelforge.worker", "reelforge.engines.preview")


@pytest.mark.parametrize("module", ["reelforge.client", "reelforge.cli", "reelforge.settings"])
def test_importing_loads_nothing_heavy(module: str) -> None:
    probe = (
        f"import sys, {module}; print(','.join(name for name in {HEAVY!r} if name in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == ""
