"""The prompt optimizer: an instruct LLM rewrites a job's prompt the way a director briefs a
shot, once per job, before the engine runs (the contract's ``prompt_optimizer`` /
``enhance_prompt`` flag).

The LLM is any OpenAI-compatible chat-completions server (vLLM, SGLang, Ollama, llama.cpp's
server, a hosted API) at ``REELFORGE_PROMPT_OPTIMIZER_URL``; its key, if any, is read from
the environment variable that ``REELFORGE_PROMPT_OPTIMIZER_API_KEY_ENV`` names and is never
logged or stored. A registry entry may turn it off for its model or give another system prompt.

The job never fails because of the optimizer: when it is unreachable, slower than
``REELFORGE_PROMPT_OPTIMIZER_TIMEOUT_SECONDS``, or answers nonsense (empty, cut off, too long,
a refusal, quoted text lost), the original prompt is used and the reason is recorded. Camera
commands in square brackets (``media.camera``) are kept verbatim and in order: if the answer
dropped, changed, moved or added one, its brackets are taken out and the request's are put
back at its end. What happened is the generation's ``meta.prompt``: ``original``, ``used``
and ``optimizer`` (``status`` rewritten | skipped | failed, ``reason``, ``model``, ``seconds``).

The worker starts the call when it claims a job and fetches the job's images meanwhile, so a
GPU waits at most the timeout, and only for the LLM's answer (``worker.Worker.process``).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as WaitTimedOut
from dataclasses import dataclass, field, replace
from typing import Any, Final

import httpx
from pydantic import SecretStr

from reelforge.contract import MAX_PROMPT_CHARS
from reelforge.engines.base import request_seed
from reelforge.engines.registry import ModelSpec, OptimizerSpec
from reelforge.media.camera import camera_commands, without_camera_commands
from reelforge.request import JSON, JobRequest
from reelforge.settings import Settings

log = logging.getLogger("reelforge.optimizer")

SYSTEM_PROMPT: Final = """\
You rewrite prompts for a video generation model. Answer with the rewritten prompt only: \
no title, no preamble, no quotes around it, no notes.

Keep everything the request says: every subject and how many of each, every text in quotes \
exactly as written, the style it names, and its language (write in the request's language).

Add what a film director would specify and the request leaves open: the shot size and angle; \
what the subjects do over the clip, in order; the setting and the light (time of day, source, \
colour); how the camera moves. Add no new main subjects, no on-screen text, nothing that \
contradicts the request.

Square brackets such as [Pan left] or [Truck left, Zoom in] are camera commands: copy every \
one exactly as written, in the same order. Write no square brackets of your own.

When the video starts from a given image, describe the motion that begins from that image; \
do not describe the image again or change what it shows.

Write one paragraph in the present tense, at most 120 words."""
"""The default system prompt (a registry entry's ``prompt_optimizer.system_prompt`` replaces it)."""

MAX_ANSWER_TOKENS: Final = 512
MAX_ANSWER_WORDS: Final = 240
"""An answer longer than this (twice what is asked), or than twice the request, is refused."""
TEMPERATURE: Final = 0.2
POOL_THREADS: Final = 8
"""Calls in flight at once per process; more wait their turn within their own deadline."""

_THINKING = re.compile(r"^\s*<think>.*?</think>", re.DOTALL)
_QUOTES: Final = '"“”'
_QUOTED = re.compile(r'"([^"\n]+)"|“([^”\n]+)”|«([^»\n]+)»')
_REFUSAL = re.compile(
    r"^\W*(?:i'?m sorry|i am sorry|sorry\b|i can(?:no|')t\b|i am unable|i'?m unable|"
    r"i won'?t\b|as an ai\b)",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Endpoint:
    """Where the LLM answers: a chat-completions base ``url`` (``…/v1``), the ``model`` it
    serves, its ``key`` (or None) and ``timeout_seconds``, the longest a job waits."""

    url: str
    model: str
    key: SecretStr | None
    timeout_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Endpoint | None:
        """The configured endpoint, or None; ``ValueError`` when the key's variable is unset."""
        if settings.prompt_optimizer_url is None or settings.prompt_optimizer_model is None:
            return None
        key = None
        name = settings.prompt_optimizer_api_key_env
        if name is not None:
            if not os.environ.get(name):
                raise ValueError(
                    f"REELFORGE_PROMPT_OPTIMIZER_API_KEY_ENV names {name}, which is not set"
                )
            key = SecretStr(os.environ[name])
        return cls(
            url=settings.prompt_optimizer_url.rstrip("/"),
            model=settings.prompt_optimizer_model,
            key=key,
            timeout_seconds=settings.prompt_optimizer_timeout_seconds,
        )


@dataclass(frozen=True)
class Rewrite:
    """What became of one job's prompt: the ``original``, the one ``used``, and the
    ``optimizer``'s report (``status``, ``reason``, ``model``, ``seconds``, ``restored``)."""

    original: str
    used: str
    optimizer: dict[str, JSON] = field(default_factory=dict)

    def meta(self) -> dict[str, JSON]:
        """The generation's ``meta.prompt``."""
        return {"original": self.original, "used": self.used, "optimizer": self.optimizer}

    def applied(self, request: JobRequest) -> JobRequest:
        """``request`` as the engine gets it: the prompt used and, when it was rewritten, the
        flag off (the work is done: an engine that forwards it must not rewrite again) and
        the seed the original prompt gives (the same request, the same video)."""
        if self.optimizer.get("status") != "rewritten":
            return request
        return replace(
            request, prompt=self.used, seed=request_seed(request), prompt_optimizer=False
        )


class Pending:
    """A rewrite under way; ``result`` waits for it until ``deadline`` (``time.monotonic``
    seconds) at most."""

    def __init__(
        self, original: str, future: Future[Rewrite], deadline: float, endpoint: Endpoint | None
    ) -> None:
        self._original, self._future = original, future
        self._deadline, self._endpoint = deadline, endpoint

    def done(self) -> bool:
        return self._future.done()

    def result(self) -> Rewrite:
        """The rewrite, or the original prompt once the deadline passed."""
        try:
            return self._future.result(timeout=max(0.0, self._deadline - time.monotonic()))
        except WaitTimedOut:
            assert self._endpoint is not None  # a skipped rewrite is done from the start
            return _too_slow(self._original, self._endpoint)
        except Exception:  # a fault of ours must not fail the job either: it is logged
            log.exception("the prompt optimizer failed")
            model = "" if self._endpoint is None else self._endpoint.model
            return _failed(self._original, "the optimizer failed (see the worker's log)", model)


class PromptOptimizer:
    """Rewrites prompts through ``endpoint`` (None: not configured); ``models`` holds the
    registry's per-model terms (a model not in it takes the defaults)."""

    def __init__(
        self, endpoint: Endpoint | None, models: Mapping[str, OptimizerSpec] | None = None
    ) -> None:
        self.endpoint = endpoint
        self.models = dict(models or {})
        self._chat = None if endpoint is None else _Chat(endpoint)

    @classmethod
    def from_settings(
        cls, settings: Settings, registry: Mapping[str, ModelSpec]
    ) -> PromptOptimizer:
        terms = {model: spec.prompt_optimizer for model, spec in registry.items()}
        return cls(Endpoint.from_settings(settings), terms)

    def start(self, request: JobRequest, model: str) -> Pending:
        """Begin rewriting ``request``'s prompt for a job of ``model`` (returns at once)."""
        terms = self.models.get(model, OptimizerSpec())
        skipped = _skip_reason(request, terms)
        if skipped is not None or self._chat is None:
            future: Future[Rewrite] = Future()
            future.set_result(_skipped(request.prompt, skipped or "not configured"))
            return Pending(request.prompt, future, 0.0, self.endpoint)
        return self._chat.submit(request, terms.system_prompt or SYSTEM_PROMPT)

    def rewrite(self, request: JobRequest, model: str) -> Rewrite:
        """``start`` and wait: the prompt ``request`` should be made with, and why."""
        return self.start(request, model).result()

    def close(self) -> None:
        """Stop taking calls (those in flight end within their timeout); close connections."""
        if self._chat is not None:
            self._chat.close()


class _Chat:
    """The LLM's chat-completions endpoint, called on a pool of ``POOL_THREADS`` threads."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._client = httpx.Client(timeout=endpoint.timeout_seconds)
        self._pool = ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="reelforge-prompt")

    def submit(self, request: JobRequest, system: str) -> Pending:
        deadline = time.monotonic() + self.endpoint.timeout_seconds
        future = self._pool.submit(self._rewrite, request, system, deadline)
        return Pending(request.prompt, future, deadline, self.endpoint)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()

    def _rewrite(self, request: JobRequest, system: str, deadline: float) -> Rewrite:
        """Ask the LLM and judge its answer; any failure gives the original prompt."""
        original, model, started = request.prompt, self.endpoint.model, time.monotonic()
        if started >= deadline:  # waited its turn in the pool past its job's deadline
            return _too_slow(original, self.endpoint)
        try:
            answer = self._ask(system, _brief(request), request_seed(request))
        except httpx.TimeoutException:
            return _too_slow(original, self.endpoint)
        except httpx.HTTPStatusError as exc:
            status = exc.response.status_code
            return _failed(original, f"the optimizer answered HTTP {status}", model)
        except httpx.HTTPError as exc:
            log.warning("the prompt optimizer is unreachable: %s", exc)
            return _failed(original, f"unreachable ({type(exc).__name__})", model)
        except ValueError:
            return _failed(original, "its answer is not JSON", model)
        report: dict[str, JSON] = {"model": model, "seconds": round(time.monotonic() - started, 3)}
        return judge(original, answer, report)

    def _ask(self, system: str, user: str, seed: int) -> Any:
        """One chat-completions call; the answer's JSON."""
        key = self.endpoint.key
        headers = {} if key is None else {"Authorization": f"Bearer {key.get_secret_value()}"}
        body = {
            "model": self.endpoint.model,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
            "temperature": TEMPERATURE,
            "max_tokens": MAX_ANSWER_TOKENS,
            "seed": seed,
        }
        url = f"{self.endpoint.url}/chat/completions"
        response = self._client.post(url, json=body, headers=headers)
        response.raise_for_status()
        return response.json()


def judge(original: str, completion: Any, report: dict[str, JSON]) -> Rewrite:
    """The prompt to use given the chat ``completion`` (its JSON) for ``original``: the
    answer with the original's camera commands, or the original with the reason."""
    model = str(report.get("model", ""))
    text, refusal = _answer(completion)
    if text is None:
        return _failed(original, refusal or "its answer is not a chat completion", model)
    text = _unwrapped(_THINKING.sub("", text).strip())
    fault = _fault(original, text)
    if fault is not None:
        return _failed(original, fault, model)
    used, restored = keep_camera_commands(original, text)
    if len(used) > MAX_PROMPT_CHARS:
        return _failed(original, f"too long: {len(used)} characters", model)
    if restored:
        report["restored"] = list(restored)
    return Rewrite(original, used, {"status": "rewritten", **report})


def keep_camera_commands(original: str, answer: str) -> tuple[str, tuple[str, ...]]:
    """``answer`` carrying ``original``'s camera commands verbatim and in order, and the
    commands put back (empty when the answer had exactly them): otherwise the answer's own
    brackets are taken out and the original's appended in order."""
    wanted = camera_commands(original)
    if camera_commands(answer) == wanted:
        return answer, ()
    return " ".join([without_camera_commands(answer), *wanted]), wanted


def _answer(completion: Any) -> tuple[str | None, str | None]:
    """The first choice's text, or None and why (a refusal, cut off, not a completion)."""
    try:
        choice = completion["choices"][0]
        message = choice["message"]
        content, finish = message.get("content"), choice.get("finish_reason")
    except (KeyError, IndexError, TypeError, AttributeError):
        return None, None
    if message.get("refusal") or finish == "content_filter":
        return None, "a refusal"
    if finish == "length":
        return None, f"its answer was cut off at {MAX_ANSWER_TOKENS} tokens"
    return (content, None) if isinstance(content, str) else (None, None)


def _unwrapped(text: str) -> str:
    """``text`` without quotes around it all; a quote inside leaves it as it is (``"OPEN" …
    "CLOSED"`` is not wrapped)."""
    inside = text[1:-1]
    wrapped = len(text) > 1 and text[0] in _QUOTES and text[-1] in _QUOTES
    return inside.strip() if wrapped and not any(q in inside for q in _QUOTES) else text


def _fault(original: str, text: str) -> str | None:
    """What makes ``text`` unfit to replace ``original``; None if nothing."""
    if not text:
        return "an empty answer"
    if _REFUSAL.match(text) and not _REFUSAL.match(original):
        return "a refusal"
    words, limit = len(text.split()), max(MAX_ANSWER_WORDS, 2 * len(original.split()))
    if words > limit:
        return f"too long: {words} words (at most {limit})"
    for match in _QUOTED.finditer(original):
        quoted = next(group for group in match.groups() if group is not None)
        if quoted not in text:
            return f"the quoted text {quoted!r} was lost"
    return None


def _brief(request: JobRequest) -> str:
    """The user message: the clip's facts the rewrite depends on, then the prompt."""
    facts = [f"A {request.duration_s}-second video."]
    if request.first_frame is not None:
        facts.append("It starts from a given image.")
    if request.last_frame is not None:
        facts.append("It ends on a given image.")
    return f"{' '.join(facts)}\nPrompt: {request.prompt}"


def _skip_reason(request: JobRequest, terms: OptimizerSpec) -> str | None:
    """Why ``request``'s prompt is used as given whatever the configuration; None if not."""
    if not request.prompt_optimizer:
        return "the request's prompt_optimizer is false"
    if not terms.enabled:
        return "off for this model (registry)"
    return None


def _skipped(prompt: str, reason: str) -> Rewrite:
    return Rewrite(prompt, prompt, {"status": "skipped", "reason": reason})


def _too_slow(prompt: str, endpoint: Endpoint) -> Rewrite:
    return _failed(prompt, f"no answer within {endpoint.timeout_seconds:g} s", endpoint.model)


def _failed(prompt: str, reason: str, model: str) -> Rewrite:
    return Rewrite(prompt, prompt, {"status": "failed", "reason": reason, "model": model})
