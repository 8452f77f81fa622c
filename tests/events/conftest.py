from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reelforge.settings import Settings
from tests.service import Api, running_api, running_workers, service_settings

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def hook_settings(data_dir: Path, **overrides: Any) -> Settings:
    """A service whose webhooks may reach loopback receivers, retried after 50 ms (then
    doubling), answered within 1 s, signed with ``SECRET``; small preview videos."""
    fields: dict[str, Any] = {
        "webhook_allow_private": True,
        "webhook_backoff_seconds": 0.05,
        "webhook_timeout_seconds": 1.0,
        "webhook_secret": SECRET,
        "preview_scale": 0.25,
    }
    return service_settings(data_dir, **{**fields, **overrides})


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Api]:
    """The API and one worker process (which delivers the webhooks)."""
    settings = hook_settings(tmp_path)
    with running_api(settings) as live, running_workers(settings):
        yield live
