"""The prompt optimizer against a fake OpenAI-compatible chat server on loopback: what it
sends, what it keeps of the answer (camera commands restored, nonsense refused), and that any
failure gives the original prompt within the timeout."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from reelforge.engines.registry import OptimizerSpec, load_registry
from reelforge.optimizer import (
    MAX_ANSWER_TOKENS,
    SYSTEM_PROMPT,
    Endpoint,
    PromptOptimizer,
    Rewrite,
)
from reelforge.request import ImageRef, JobRequest
from reelforge.settings import Settings
from tests.chat_server import ChatServer, chat_server
from tests.service import free_port

PROMPT = 'A red fox says "HELLO" in the snow [Pan left] then sleeps [Zoom in, Shake]'
REWRITE = (
    'Medium shot: a red fox in fresh snow at dawn looks up and says "HELLO" [Pan left], '
    "then curls up and sleeps as soft light spreads [Zoom in, Shake]"
)


def optimizer(url: str, timeout: float = 5.0, **terms: OptimizerSpec) -> PromptOptimizer:
    return PromptOptimizer(Endpoint(url, "qwen-test", None, timeout), terms)


@pytest.fixture
def chat() -> Iterator[ChatServer]:
    with chat_server(ChatServer(reply=REWRITE)) as live:
        yield live


def rewrite(chat: ChatServer, prompt: str = PROMPT, **fields: object) -> Rewrite:
    optimizing = optimizer(chat.url)
    try:
        return optimizing.rewrite(JobRequest(prompt=prompt, **fields), "preview")  # type: ignore[arg-type]
    finally:
        optimizing.close()


def test_a_good_answer_is_used_and_the_report_says_so(chat: ChatServer) -> None:
    done = rewrite(chat)
    assert (done.original, done.used) == (PROMPT, REWRITE)
    assert done.optimizer["status"] == "rewritten"
    assert done.optimizer["model"] == "qwen-test"
    assert "restored" not in done.optimizer
    (body,) = chat.bodies
    assert body["model"] == "qwen-test"
    assert body["max_tokens"] == MAX_ANSWER_TOKENS
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert body["messages"][0]["content"] == SYSTEM_PROMPT
    assert body["messages"][1]["content"].endswith(f"Prompt: {PROMPT}")
    assert chat.authorizations == [None]


def test_the_engine_gets_the_rewrite_with_the_seed_of_the_original_and_the_flag_spent(
    chat: ChatServer,
) -> None:
    request = JobRequest(prompt=PROMPT)
    made = rewrite(chat).applied(request)
    assert (made.prompt, made.prompt_optimizer) == (REWRITE, False)
    from reelforge.engines.base import request_seed

    assert made.seed == request_seed(request)


def test_a_first_frame_is_told_to_the_model(chat: ChatServer) -> None:
    rewrite(chat, first_frame=ImageRef(field="first_frame_image", url="http://x/a.png"))
    assert "starts from a given image" in chat.bodies[0]["messages"][1]["content"]


@pytest.mark.parametrize(
    "answer",
    [
        'A fox says "HELLO" and sleeps.',  # dropped both
        'A fox says "HELLO" [Pan right] and sleeps [Zoom in, Shake].',  # changed one
        'A fox says "HELLO" [Zoom in, Shake] and sleeps [Pan left].',  # reordered
        'A fox says "HELLO" [Pan left] and sleeps [Zoom in, Shake] [Orbit camera].',  # added one
    ],
)
def test_camera_commands_survive_an_answer_that_drops_or_alters_them(
    chat: ChatServer, answer: str
) -> None:
    chat.reply = answer
    done = rewrite(chat)
    assert done.optimizer["status"] == "rewritten"
    assert done.used.endswith("[Pan left] [Zoom in, Shake]")
    assert done.used.count("[") == 2
    assert done.optimizer["restored"] == ["[Pan left]", "[Zoom in, Shake]"]


def test_plain_brackets_of_the_answer_are_text_not_commands(chat: ChatServer) -> None:
    chat.reply = "A sign reads [closed] while a fox sleeps, soft light"
    done = rewrite(chat, prompt="A fox sleeps by a sign")
    assert done.used == chat.reply
    assert "restored" not in done.optimizer


@pytest.mark.parametrize(
    ("answer", "finish", "reason"),
    [
        ("", "stop", "an empty answer"),
        ("   ", "stop", "an empty answer"),
        ("I'm sorry, but I can't help with that.", "stop", "a refusal"),
        ("As an AI, I cannot rewrite this.", "stop", "a refusal"),
        ("A fox " * 10, "length", "cut off"),
        ("A fox " * 10, "content_filter", "a refusal"),
        ("word " * 400, "stop", "too long: 400 words"),
        ("A fox says hello in the snow [Pan left] [Zoom in, Shake]", "stop", "'HELLO' was lost"),
    ],
)
def test_nonsense_gives_the_original_prompt_and_says_why(
    chat: ChatServer, answer: str, finish: str, reason: str
) -> None:
    chat.reply, chat.finish_reason = answer, finish
    done = rewrite(chat)
    assert done.used == PROMPT
    assert done.optimizer["status"] == "failed"
    assert reason in str(done.optimizer["reason"])


def test_a_thinking_block_and_wrapping_quotes_are_taken_off(chat: ChatServer) -> None:
    plain = "Wide shot: a red fox sleeps in the snow at dawn [Zoom in]"
    chat.reply = f'<think>The user wants a fox.</think>\n"{plain}"'
    assert rewrite(chat, prompt="A fox sleeps [Zoom in]").used == plain


@pytest.mark.parametrize(
    "answer",
    ['A sign reads "OPEN"', '"OPEN" glows on a sign, then "CLOSED"', '"HELLO" says a fox'],
)
def test_quotes_that_belong_to_the_answer_are_kept(chat: ChatServer, answer: str) -> None:
    chat.reply = answer
    assert rewrite(chat, prompt="A shop sign at night").used == answer


def test_an_http_error_gives_the_original(chat: ChatServer) -> None:
    chat.status = 500
    done = rewrite(chat)
    assert (done.used, done.optimizer["reason"]) == (PROMPT, "the optimizer answered HTTP 500")


def test_an_optimizer_that_is_down_gives_the_original_at_once() -> None:
    optimizing = optimizer(f"http://127.0.0.1:{free_port()}/v1")
    started = time.monotonic()
    done = optimizing.rewrite(JobRequest(prompt=PROMPT), "preview")
    optimizing.close()
    assert time.monotonic() - started < 2
    assert (done.used, done.optimizer["status"]) == (PROMPT, "failed")
    assert done.optimizer["reason"] == "unreachable (ConnectError)"


def test_a_hanging_optimizer_gives_the_original_at_its_timeout(chat: ChatServer) -> None:
    chat.delay = 30
    optimizing = optimizer(chat.url, timeout=1.0)
    started = time.monotonic()
    done = optimizing.rewrite(JobRequest(prompt=PROMPT), "preview")
    waited = time.monotonic() - started
    assert 0.9 <= waited < 2.0
    assert (done.used, done.optimizer["reason"]) == (PROMPT, "no answer within 1 s")
    chat.released.set()
    optimizing.close()


def test_the_flag_false_never_calls_the_optimizer(chat: ChatServer) -> None:
    done = rewrite(chat, prompt_optimizer=False)
    assert chat.bodies == []
    assert done.used == PROMPT
    assert done.optimizer == {
        "status": "skipped",
        "reason": "the request's prompt_optimizer is false",
    }
    assert done.applied(JobRequest(prompt=PROMPT)) == JobRequest(prompt=PROMPT)


def test_without_an_optimizer_the_prompt_is_used_as_given() -> None:
    done = PromptOptimizer(None).rewrite(JobRequest(prompt=PROMPT), "preview")
    assert done.meta() == {
        "original": PROMPT,
        "used": PROMPT,
        "optimizer": {"status": "skipped", "reason": "not configured"},
    }


def test_a_model_may_turn_it_off_or_bring_its_own_system_prompt(chat: ChatServer) -> None:
    optimizing = optimizer(
        chat.url,
        quiet=OptimizerSpec(enabled=False),
        own=OptimizerSpec(system_prompt="Rewrite as a haiku."),
    )
    off = optimizing.rewrite(JobRequest(prompt=PROMPT), "quiet")
    own = optimizing.rewrite(JobRequest(prompt=PROMPT), "own")
    optimizing.close()
    assert off.optimizer == {"status": "skipped", "reason": "off for this model (registry)"}
    assert own.used == REWRITE
    assert [body["messages"][0]["content"] for body in chat.bodies] == ["Rewrite as a haiku."]


def test_the_key_is_sent_from_its_variable_and_never_reported(
    chat: ChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM_KEY", "sk-secret-123")
    settings = Settings(
        prompt_optimizer_url=chat.url,
        prompt_optimizer_model="qwen-test",
        prompt_optimizer_api_key_env="LLM_KEY",
    )
    endpoint = Endpoint.from_settings(settings)
    assert endpoint is not None
    assert endpoint.key == SecretStr("sk-secret-123")
    assert "sk-secret" not in repr(endpoint)
    optimizing = PromptOptimizer(endpoint)
    done = optimizing.rewrite(JobRequest(prompt=PROMPT), "preview")
    optimizing.close()
    assert chat.authorizations == ["Bearer sk-secret-123"]
    assert "sk-secret" not in str(done.meta())


def test_a_key_variable_that_is_not_set_stops_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_KEY", raising=False)
    settings = Settings(
        prompt_optimizer_url="http://127.0.0.1:9/v1",
        prompt_optimizer_model="m",
        prompt_optimizer_api_key_env="NO_SUCH_KEY",
    )
    with pytest.raises(ValueError, match="names NO_SUCH_KEY, which is not set"):
        Endpoint.from_settings(settings)


def test_a_url_without_a_model_stops_the_start() -> None:
    with pytest.raises(ValidationError, match="REELFORGE_PROMPT_OPTIMIZER_MODEL"):
        Settings(prompt_optimizer_url="http://127.0.0.1:9/v1")
    with pytest.raises(ValidationError, match="prompt_optimizer_url"):
        Settings(prompt_optimizer_url="ftp://llm/v1", prompt_optimizer_model="m")


def test_the_registry_takes_a_models_terms_and_refuses_unknown_keys(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(
        '[models.quiet]\nengine = "preview"\nprompt_optimizer = { enabled = false }\n'
        '[models.own]\nengine = "preview"\n'
        '[models.own.prompt_optimizer]\nsystem_prompt = "Rewrite as a haiku."\n'
    )
    registry = load_registry(path)
    assert registry["quiet"].prompt_optimizer == OptimizerSpec(enabled=False)
    assert registry["own"].prompt_optimizer.system_prompt == "Rewrite as a haiku."
    path.write_text('[models.bad]\nengine = "preview"\nprompt_optimizer = { enable = false }\n')
    with pytest.raises(ValueError, match=r"models.'bad'.prompt_optimizer.enable: unknown key"):
        load_registry(path)


def test_a_fault_in_judging_the_answer_gives_the_original(
    chat: ChatServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object) -> Rewrite:
        raise RuntimeError("a bug")

    monkeypatch.setattr("reelforge.optimizer.judge", broken)
    done = rewrite(chat)
    assert (done.used, done.optimizer["status"]) == (PROMPT, "failed")
    assert "a bug" in caplog.text


def test_a_prompt_that_opens_like_a_refusal_may_be_rewritten_so(chat: ChatServer) -> None:
    chat.reply = "Sorry, we're closed: a hand-painted sign swings on a shop door in the wind"
    done = rewrite(chat, prompt="Sorry, we're closed: a sign on a shop door")
    assert done.used == chat.reply
