"""The suite never downloads weights: hubs are off for the whole session, and an engine
asked for a hub repo id it does not have locally fails at once instead of fetching it."""

from __future__ import annotations

import os
import time

import pytest

pytest.importorskip("diffusers")

from reelforge.engines import build_engine
from reelforge.engines.registry import ModelSpec


def test_the_session_runs_with_the_hubs_off() -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"


@pytest.mark.parametrize("engine", ["wan", "ltx"])
def test_a_hub_repo_id_is_not_fetched(engine: str) -> None:
    spec = ModelSpec(
        id="remote",
        engine=engine,
        weights="Wan-AI/Wan2.1-T2V-1.3B-Diffusers",
        device="cpu",
        dtype="float32",
    )
    started = time.monotonic()
    with pytest.raises(Exception, match=r"(?i)offline|cannot find|not found|couldn't connect"):
        build_engine(spec).load()
    assert time.monotonic() - started < 30  # refused locally, no network wait
