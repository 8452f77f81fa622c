"""Webhooks end to end: a real service (API on loopback, a worker process delivering) and
real receivers on loopback. Payloads are the creating dialect's; every attempt carries the
delivery's one ``webhook-id`` and a Standard Webhooks signature that the ``standardwebhooks``
package's own verifier accepts; every attempt is recorded and listed."""

from __future__ import annotations

from typing import Any

from standardwebhooks import Webhook

from reelforge.api.auth import hash_key, register
from tests.events.conftest import SECRET
from tests.events.receiver import Received, receiving
from tests.service import LEGACY, TEST_KEY, Api

PROMPT = {"model": "minimax/hailuo-02", "prompt": "a lighthouse at dusk", "duration": 6}


def verified(received: Received) -> Any:
    """The payload, once ``standardwebhooks`` accepted its signature."""
    return Webhook(SECRET).verify(received.body, received.headers)


def deliveries(service: Api, generation_id: str) -> list[dict[str, Any]]:
    answer = service.client.get("/v2/webhooks/deliveries", params={"generation_id": generation_id})
    assert answer.status_code == 200, answer.text
    data: list[dict[str, Any]] = answer.json()["data"]
    return data


def test_a_completion_answered_500_twice_arrives_three_times_with_one_id(service: Api) -> None:
    with receiving(statuses=[500, 500]) as receiver:
        created = service.client.post(
            "/v1/videos", json={"prompt": "a red kite", "callback_url": receiver.url}
        )
        assert created.status_code == 200, created.text
        video_id = created.json()["id"]
        arrived = receiver.wait_for(3)
    assert [got.status for got in arrived] == [500, 500, 200]
    assert len({got.headers["webhook-id"] for got in arrived}) == 1
    payloads = [verified(got) for got in arrived]
    assert payloads[0] == payloads[1] == payloads[2]
    event = payloads[0]
    assert event["id"].startswith("evt_")
    assert event["object"] == "event"
    assert (event["type"], event["data"]) == ("video.completed", {"id": video_id})
    assert isinstance(event["created_at"], int)
    attempts = deliveries(service, video_id)
    assert [(a["attempt"], a["status_code"], a["error"]) for a in attempts] == [
        (3, 200, None),
        (2, 500, "HTTP 500"),
        (1, 500, "HTTP 500"),
    ]
    assert {(a["webhook_id"], a["event"], a["url"]) for a in attempts} == {
        (arrived[0].headers["webhook-id"], "video.completed", receiver.url)
    }
    assert attempts[0]["at"] >= attempts[1]["at"] >= attempts[2]["at"]
    other = "rf_another-key-of-the-suite-0123456789"
    register(service.store, other, name="other")
    theirs = service.client.get(
        "/v2/webhooks/deliveries",
        params={"generation_id": video_id},
        headers={"Authorization": f"Bearer {other}"},
    )
    assert theirs.json() == {"data": []}  # only the key's own


def test_hailuo_sends_the_poll_json_on_each_status_change(service: Api) -> None:
    with receiving() as receiver:
        created = service.create({**PROMPT, "callback_url": receiver.url})
        assert created.status_code == 200, created.text
        generation_id = created.json()["generation_id"]
        final = service.wait(generation_id)
        arrived = receiver.wait_for(3)
    payloads = [verified(got) for got in arrived]
    assert [p["status"] for p in payloads] == ["queued", "generating", "completed"]
    assert {p["id"] for p in payloads} == {generation_id}
    assert payloads[-1].keys() == final.keys()
    assert payloads[-1]["video"]["url"].startswith(f"{service.base_url}/")
    assert payloads[-1]["meta"] == final["meta"]
    assert len({got.headers["webhook-id"] for got in arrived}) == 3


def test_a_keys_default_endpoint_gets_what_has_no_callback_url(service: Api) -> None:
    with receiving() as default, receiving() as own:
        key = service.store.key_for_hash(hash_key(TEST_KEY))
        assert key is not None
        assert service.store.set_key_webhook(key.id, url=default.url)
        plain = service.create(PROMPT).json()["generation_id"]
        named = service.create({**PROMPT, "callback_url": own.url}).json()["generation_id"]
        to_default, to_own = default.wait_for(3), own.wait_for(3)
    assert {verified(got)["id"] for got in to_default} == {plain}
    assert {verified(got)["id"] for got in to_own} == {named}


def test_a_job_without_any_endpoint_sends_nothing(service: Api) -> None:
    generation_id = service.create(PROMPT).json()["generation_id"]
    service.wait(generation_id)
    assert deliveries(service, generation_id) == []


def test_callback_url_must_be_an_http_url(service: Api) -> None:
    answer = service.client.post(LEGACY, json={**PROMPT, "callback_url": "ftp://example.com/x"})
    assert answer.status_code == 400
    assert "callback_url" in answer.text
