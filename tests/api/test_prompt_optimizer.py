"""The optimizer flag through the real API and a real worker process, with a fake chat LLM on
loopback: the Hailuo unified route's ``enhance_prompt`` rewrites the prompt the preview engine
renders (its camera from the brackets kept), the legacy route's ``prompt_optimizer: false``
never reaches the LLM, and the poll's ``meta.prompt`` says what happened."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chat_server import ChatServer, chat_server
from tests.service import LEGACY, UNIFIED, Api, running_api, running_workers, service_settings

PROMPT = 'A neon sign reads "OPEN" in the rain [Zoom in]'
TIMEOUT = 1.5
REWRITE = 'Close-up at night: a neon sign reads "OPEN", rain streaking past, the glow pulsing'


@pytest.fixture
def chat() -> Iterator[ChatServer]:
    with chat_server(ChatServer(reply=REWRITE)) as live:
        yield live


@pytest.fixture
def service(tmp_path: Path, chat: ChatServer) -> Iterator[Api]:
    settings = service_settings(
        tmp_path,
        preview_scale=0.25,
        prompt_optimizer_url=chat.url,
        prompt_optimizer_model="qwen-test",
        prompt_optimizer_timeout_seconds=TIMEOUT,
    )
    with running_api(settings) as live, running_workers(settings):
        yield live


def test_enhance_prompt_rewrites_what_the_engine_renders(service: Api, chat: ChatServer) -> None:
    body = {"model": "minimax/hailuo-02", "prompt": PROMPT, "enhance_prompt": True}
    created = service.create(body, route=UNIFIED).json()
    done = service.wait(created["id"])
    assert done["status"] == "completed", done
    prompt = done["meta"]["prompt"]
    used = f"{REWRITE} [Zoom in]"  # the LLM dropped the camera command: put back
    assert (prompt["original"], prompt["used"]) == (PROMPT, used)
    assert prompt["optimizer"]["status"] == "rewritten"
    assert prompt["optimizer"]["restored"] == ["[Zoom in]"]
    assert done["meta"]["video"]["camera"] == [["Zoom in"]]
    assert len(chat.bodies) == 1
    assert chat.bodies[0]["messages"][1]["content"].endswith(PROMPT)


def test_prompt_optimizer_false_never_reaches_the_llm(service: Api, chat: ChatServer) -> None:
    body = {"model": "minimax/hailuo-02", "prompt": PROMPT, "prompt_optimizer": False}
    created = service.create(body, route=LEGACY).json()
    done = service.wait(created["generation_id"])
    assert done["status"] == "completed", done
    assert chat.bodies == []
    assert done["meta"]["prompt"] == {
        "original": PROMPT,
        "used": PROMPT,
        "optimizer": {"status": "skipped", "reason": "the request's prompt_optimizer is false"},
    }


def test_a_hanging_llm_delays_the_job_by_its_timeout_only(service: Api, chat: ChatServer) -> None:
    chat.delay = 60
    body = {"model": "minimax/hailuo-02", "prompt": PROMPT, "prompt_optimizer": True}
    started = time.monotonic()
    created = service.create(body, route=LEGACY).json()
    done = service.wait(created["generation_id"])
    took = time.monotonic() - started
    assert done["status"] == "completed", done
    assert done["meta"]["prompt"]["used"] == PROMPT
    assert done["meta"]["prompt"]["optimizer"]["reason"] == "no answer within 1.5 s"
    assert TIMEOUT <= took < TIMEOUT + 5


def test_the_engine_renders_the_rewrite(service: Api, chat: ChatServer) -> None:
    chat.reply = "Wide shot of a lighthouse at dusk as the camera pans left over the waves"
    body = {"model": "minimax/hailuo-02", "prompt": "A lighthouse at dusk"}
    done = service.wait(service.create(body, route=LEGACY).json()["generation_id"])
    assert done["status"] == "completed", done
    # The preview engine reads the camera from the prompt it was given: the rewrite's words.
    assert done["meta"]["video"]["camera"] == [["Pan left"]]
