"""MiniMax's callback protocol on a real service: a create with ``callback_url`` first sends
the URL a challenge; an echo lets the create through and the task's status changes are then
pushed in the query's shape; no echo, a wrong one or none within 3 s refuses the create
(``base_resp`` 2013 naming ``callback_url``), and a slow receiver holds up nobody else."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from standardwebhooks import Webhook

from tests.events.conftest import SECRET
from tests.events.receiver import receiving
from tests.service import Api

CREATE = "/v1/video_generation"
BODY = {"model": "MiniMax-Hailuo-02", "prompt": "a paper boat", "duration": 6}


def echo(request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return 200, {"challenge": request["challenge"]} if "challenge" in request else {}


def test_an_echoed_challenge_lets_the_create_through_and_pushes_follow(service: Api) -> None:
    with receiving() as receiver:
        receiver.answer = echo
        created = service.client.post(CREATE, json={**BODY, "callback_url": receiver.url})
        answer = created.json()
        assert answer["base_resp"] == {"status_code": 0, "status_msg": "success"}, answer
        task_id = answer["task_id"]
        arrived = receiver.wait_for(4)
    challenge, *pushes = arrived
    assert set(challenge.json()) == {"challenge"}
    assert "webhook-id" not in challenge.headers
    payloads = [Webhook(SECRET).verify(got.body, got.headers) for got in pushes]
    assert [p["status"] for p in payloads] == ["Queueing", "Preparing", "Success"]
    assert {p["task_id"] for p in payloads} == {task_id}
    query = service.client.get("/v1/query/video_generation", params={"task_id": task_id})
    assert payloads[-1] == query.json()


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (lambda request: (200, {}), "did not echo the challenge"),
        (lambda request: (200, {"challenge": "not-it"}), "did not echo the challenge"),
        (lambda request: (500, request), "HTTP 500"),
    ],
    ids=["no echo", "wrong echo", "error status"],
)
def test_a_challenge_not_echoed_refuses_the_create(service: Api, reply: Any, why: str) -> None:
    with receiving() as receiver:
        receiver.answer = reply
        answer = service.client.post(CREATE, json={**BODY, "callback_url": receiver.url})
    assert answer.status_code == 200
    resp = answer.json()["base_resp"]
    assert resp["status_code"] == 2013
    assert resp["status_msg"].startswith("callback_url")
    assert why in resp["status_msg"]
    assert "task_id" not in answer.json()
    assert service.client.get("/v1/videos").json()["data"] == []


def test_a_slow_receiver_is_refused_after_3_s_and_delays_nobody_else(service: Api) -> None:
    with receiving(delay=5.0) as receiver:
        receiver.answer = echo
        outcome: dict[str, Any] = {}

        def slow_create() -> None:
            started = time.monotonic()
            answer = service.client.post(CREATE, json={**BODY, "callback_url": receiver.url})
            outcome["answer"], outcome["seconds"] = answer.json(), time.monotonic() - started

        slow = [threading.Thread(target=slow_create) for _ in range(6)]
        for thread in slow:
            thread.start()
        time.sleep(0.3)
        started = time.monotonic()
        other = service.client.post(CREATE, json=BODY)
        poll = service.client.get(
            "/v1/query/video_generation", params={"task_id": other.json()["task_id"]}
        )
        others_took = time.monotonic() - started
        for thread in slow:
            thread.join()
    assert poll.json()["base_resp"]["status_code"] == 0
    assert others_took < 1.0, f"a create and a query took {others_took:.2f} s"
    assert outcome["answer"]["base_resp"]["status_code"] == 2013
    assert "within 3 s" in outcome["answer"]["base_resp"]["status_msg"]
    assert 2.9 < outcome["seconds"] < 4.5
