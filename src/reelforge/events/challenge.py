"""MiniMax's callback check: before a MiniMax-dialect create with ``callback_url`` is
accepted, the URL is sent ``{"challenge": "<random>"}`` and must answer
``{"challenge": "<same>"}`` within ``CHALLENGE_SECONDS``; otherwise the create is refused
(``InvalidRequest`` naming ``callback_url``).

The post runs on a thread of its own, never the API's thread pool, at most ``PER_KEY`` at
once per API key: a slow receiver delays only its own key's creates, never other routes or
other keys. The URL passes the webhook guard (``webhook_allow_private``).
"""

from __future__ import annotations

import json
import secrets
from typing import Final

import anyio
import anyio.to_thread

from reelforge.errors import ImageFetchFailed, InvalidRequest
from reelforge.media.fetch import FetchPolicy, post_json

CHALLENGE_SECONDS: Final = 3.0
PER_KEY: Final = 4
"""Challenges one API key may have in flight at once in one API process."""
FIELD: Final = "callback_url"


class Challenges:
    """The callback checks of one API process (one limiter per key, made on first use)."""

    def __init__(self, *, allow_private: bool, seconds: float = CHALLENGE_SECONDS) -> None:
        self._seconds = seconds
        self._policy = FetchPolicy(
            max_bytes=4096, deadline_seconds=seconds, max_redirects=0, allow_private=allow_private
        )
        self._limiters: dict[str, anyio.CapacityLimiter] = {}

    async def verify(self, url: str, *, owner: str) -> None:
        """Return once ``url`` echoed a fresh challenge; ``InvalidRequest`` naming
        ``callback_url`` if it did not within the time (waiting for a turn included)."""
        limiter = self._limiters.setdefault(owner, anyio.CapacityLimiter(PER_KEY))
        challenge = secrets.token_urlsafe(24)
        try:
            with anyio.fail_after(self._seconds):
                why = await anyio.to_thread.run_sync(
                    self._post, url, challenge, limiter=limiter, abandon_on_cancel=True
                )
        except TimeoutError:
            raise InvalidRequest(
                FIELD, f"{url} did not answer the challenge within {self._seconds:g} s"
            ) from None
        if why is not None:
            raise InvalidRequest(FIELD, f"{url} did not echo the challenge: {why}")

    def _post(self, url: str, challenge: str) -> str | None:
        """None if the receiver echoed ``challenge``; else why not, in a few words."""
        body = json.dumps({"challenge": challenge}).encode()
        try:
            status, answer = post_json(url, body, {}, field=FIELD, policy=self._policy)
        except ImageFetchFailed as exc:
            return str(exc)
        if status != 200:
            return f"HTTP {status}"
        try:
            echoed = json.loads(answer).get("challenge")
        except (ValueError, AttributeError):
            return "the answer is not a JSON object"
        return None if echoed == challenge else "the answer's challenge is not the one sent"
