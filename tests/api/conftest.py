from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service import Api, running_api, running_workers, service_settings


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    """The API alone (no worker): jobs stay queued."""
    with running_api(service_settings(tmp_path)) as live:
        yield live


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Api]:
    """The API and one worker process."""
    settings = service_settings(tmp_path)
    with running_api(settings) as live, running_workers(settings):
        yield live
