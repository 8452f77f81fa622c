"""``list``, ``list_page`` and ``delete`` (reelforge's extensions) on ``Client`` and
``AsyncClient``, against a real API on loopback: one without workers, so that what a test
creates stays queued and is all its key has; and the shared service for a completed one."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import httpx
import pytest

from reelforge.client import ApiError, AsyncClient, Client, Page
from reelforge.contract import Status
from tests.client.inputs import QUICK
from tests.client.loopback import HANG_UP, LEGACY, as_json, in_turn, serving
from tests.client.recording import Recording
from tests.service import TEST_KEY, Api, running_api, service_settings

WAIT = 30.0


@pytest.fixture
def idle(tmp_path: Path) -> Iterator[Api]:
    """An API with no worker: generations stay queued."""
    with running_api(service_settings(tmp_path)) as api:
        yield api


def made(client: Client, count: int) -> list[str]:
    """The ids of ``count`` new generations, oldest first."""
    return [client.create(f"clip {n}", model="preview").id for n in range(count)]


def listings(transport: Recording) -> list[dict[str, str]]:
    """The query of each list request the client sent."""
    return [
        dict(request.url.params)
        for request in transport.requests
        if request.method == "GET" and "generation_id" not in request.url.params
    ]


def test_list_pages_through_every_generation_newest_first(idle: Api) -> None:
    transport = Recording()
    with Client(f"{idle.base_url}/v2", TEST_KEY, policy=QUICK, transport=transport) as client:
        ids = made(client, 25)
        listed = [generation.id for generation in client.list(limit=10)]
    assert listed == ids[::-1]
    assert listings(transport) == [
        {"limit": "10"},
        {"limit": "10", "after": ids[15]},
        {"limit": "10", "after": ids[5]},
    ]


def test_list_fetches_a_page_only_when_the_iteration_reaches_it(idle: Api) -> None:
    transport = Recording()
    with Client(f"{idle.base_url}/v2", TEST_KEY, policy=QUICK, transport=transport) as client:
        ids = made(client, 5)
        newest = [generation.id for generation in islice(client.list(limit=2), 3)]
        after = [generation.id for generation in client.list(after=ids[2])]
    assert newest == [ids[4], ids[3], ids[2]]
    assert after == [ids[1], ids[0]]
    assert len(listings(transport)) == 3  # two pages for the first three, one for the rest


def test_list_page_gives_one_page_and_the_cursor_to_the_next(idle: Api) -> None:
    with Client(f"{idle.base_url}/v2", TEST_KEY, policy=QUICK) as client:
        ids = made(client, 3)
        first = client.list_page(limit=2)
        second = client.list_page(after=first.last_id, limit=2)
        everything = client.list_page()
    assert isinstance(first, Page)
    assert ([g.id for g in first.data], first.has_more, first.last_id) == (
        [ids[2], ids[1]],
        True,
        ids[1],
    )
    assert ([g.id for g in second.data], second.has_more) == ([ids[0]], False)
    assert len(everything.data) == 3
    newest = everything.data[0]
    assert (newest.status, newest.model, newest.progress) == (Status.QUEUED, "preview", 0)
    assert newest.created_at == newest.raw["created_at"]
    assert newest.finished_at is None


def test_a_limit_outside_1_to_100_is_refused_by_the_server(idle: Api) -> None:
    with (
        Client(f"{idle.base_url}/v2", TEST_KEY, policy=QUICK) as client,
        pytest.raises(ApiError) as refused,
    ):
        client.list_page(limit=101)
    assert (refused.value.status, refused.value.name) == (400, "InvalidRequest")
    assert refused.value.message.startswith("limit: ")


def test_delete_removes_a_queued_generation_and_its_id(idle: Api) -> None:
    with Client(f"{idle.base_url}/v2", TEST_KEY, policy=QUICK) as client:
        kept, gone = made(client, 2)
        assert client.delete(gone) is None
        with pytest.raises(ApiError) as unknown:
            client.get(gone)
        assert [generation.id for generation in client.list()] == [kept]
        with pytest.raises(ApiError) as again:
            client.delete(gone)
    assert (unknown.value.status, again.value.status) == (404, 404)


def test_delete_of_a_completed_generation_deletes_its_video(live: Api, tmp_path: Path) -> None:
    with Client(f"{live.base_url}/v2", TEST_KEY, policy=QUICK) as client:
        done = client.generate("A lighthouse", timeout=WAIT, output=tmp_path / "v.mp4")
        assert done.video_url is not None
        assert httpx.get(done.video_url).status_code == 200
        client.delete(done.id)
        assert httpx.get(done.video_url).status_code == 404
        assert done.id not in {generation.id for generation in client.list(limit=100)}


def test_a_delete_whose_answer_was_lost_is_done_when_the_resend_finds_nothing() -> None:
    """The first send reached the server (it hung up without answering): a 404 to the resend
    is that send's success, not an error. A 404 to a first send is an error."""
    missing = as_json({"error": {"name": "NotFound", "message": "no generation 'g1'"}}, 404)
    with serving() as server:
        server.route("DELETE", LEGACY, in_turn(HANG_UP, missing))
        with Client(f"{server.base_url}/v2", TEST_KEY, policy=QUICK) as client:
            assert client.delete("g1") is None
            with pytest.raises(ApiError, match="404 NotFound"):
                client.delete("g1")
        sent = server.requests("DELETE", LEGACY)
    assert len(sent) == 3
    assert sent[0].query == {"generation_id": "g1", "purge": "true"}


# --- AsyncClient --------------------------------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_async_list_pages_and_delete(idle: Api) -> None:
    with Client(f"{idle.base_url}/v2", TEST_KEY, policy=QUICK) as sync:
        ids = made(sync, 25)
    async with AsyncClient(f"{idle.base_url}/v2", TEST_KEY, policy=QUICK) as client:
        listed = [generation.id async for generation in client.list(limit=10)]
        page = await client.list_page(limit=10)
        await client.delete(ids[-1])
        after = await client.list_page(limit=10)
        with pytest.raises(ApiError) as unknown:
            await client.get(ids[-1])
    assert listed == ids[::-1]
    assert ([g.id for g in page.data], page.has_more) == (ids[:-11:-1], True)
    assert [g.id for g in after.data] == ids[-2:-12:-1]
    assert unknown.value.status == 404
