"""The suite never downloads weights: hubs are off for the whole session, and an engine
asked for a hub repo id it does not have locally fails at once instead of fetching it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("diffusers")

import huggingface_hub.constants

from reelforge.engines import build_engine
from reelforge.engines.registry import ModelSpec

# Run in a child that inherits the session's environment, as the worker processes do: any
# name lookup or connection is counted, then a hub download of an uncached file is tried.
CHILD = """
import socket, sys
import huggingface_hub
from huggingface_hub.errors import LocalEntryNotFoundError

attempts = []
def refuse(*args, **kwargs):
    attempts.append(args)
    raise OSError("the network was reached for")
socket.getaddrinfo = refuse
socket.socket.connect = refuse
try:
    huggingface_hub.hf_hub_download(
        "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "model_index.json", cache_dir=sys.argv[1]
    )
except LocalEntryNotFoundError:
    print("refused", huggingface_hub.constants.HF_HUB_OFFLINE, len(attempts))
"""


def test_hub_downloads_are_refused_without_touching_the_network(tmp_path: Path) -> None:
    assert huggingface_hub.constants.HF_HUB_OFFLINE  # set before the hub library read it
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert child.stdout.split() == ["refused", "True", "0"], child.stderr


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
