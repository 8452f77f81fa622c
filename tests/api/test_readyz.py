from __future__ import annotations

import time

from tests.service import Api


def test_not_ready_without_workers(api: Api) -> None:
    answer = api.client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json() == {"ready": False, "waiting_for": ["minimax/hailuo-02", "preview"]}


def test_ready_once_a_worker_has_loaded_every_model(service: Api) -> None:
    deadline = time.monotonic() + 30
    while (answer := service.client.get("/readyz")).status_code != 200:
        assert time.monotonic() < deadline, answer.json()
        time.sleep(0.1)
    assert answer.json() == {"ready": True, "waiting_for": []}
