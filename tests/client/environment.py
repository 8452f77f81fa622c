"""The environment a ``reelforge`` subprocess runs in: a user's bare one, plus
``PYTHONPATH`` when the tests were given one (so the subprocess runs the code under test,
not whichever reelforge the interpreter has installed)."""

from __future__ import annotations

import os


def user_environment(**variables: str) -> dict[str, str]:
    """``PATH``, ``PYTHONPATH`` if set here, and ``variables``."""
    inherited = {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}
    return {"PATH": "/usr/bin:/bin", **inherited, **variables}
