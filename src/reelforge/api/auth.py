"""Bearer API keys: made here, stored only as SHA-256 hashes, checked on every call.

``authenticate(keys, authorization)`` is the one check every route makes. Given the store
itself it asks the store on every call; given the app's ``KeyCache`` (one per app, in front of
the store) it asks the store at most once per key every ``KEY_CACHE_SECONDS``, so a key
revoked in the store (by ``reelforge keys revoke``, from any process) may go on working for
up to that long in each API process that saw it just before.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from typing import Final

from reelforge.errors import Unauthorized
from reelforge.jobs.model import NO_LIMITS, ApiKey, KeyLimits, KeyStore, Priority

KEY_PREFIX: Final = "rf_"
KEY_CACHE_SECONDS: Final = 2.0
"""How long an API process trusts a key it found in the store: the longest a revoked key
still works there."""
KEY_CACHE_ENTRIES: Final = 10_000
"""Most keys a ``KeyCache`` holds; the one found longest ago goes first."""


def new_key() -> str:
    """A fresh random key (256 bits); shown once, never stored."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The stored form of a key (keys are random, so a plain hash cannot be reversed)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyRevoked(Exception):
    """A key given to ``register`` was revoked: it is not stored again nor brought back."""


def register(
    store: KeyStore,
    key: str,
    *,
    name: str,
    limits: KeyLimits = NO_LIMITS,
    priority: Priority = Priority.NORMAL,
) -> ApiKey:
    """Store ``key`` (hashed) with its own ``limits`` and ``priority`` unless it is already
    known; returns its record, or raises ``KeyRevoked`` if it was revoked."""
    known = store.key_for_hash(hash_key(key))
    if known is not None:
        return known
    if store.key_revoked(hash_key(key)):
        raise KeyRevoked(f"the key {key[:8]}… was revoked")
    return store.add_key(
        name=name, key_hash=hash_key(key), prefix=key[:8], limits=limits, priority=priority
    )


class KeyCache:
    """Active keys found in ``store``, each remembered for ``ttl_seconds`` from when it was
    found (by ``clock``, in seconds), at most ``max_entries`` of them.

    Only keys the store knows are remembered: a flood of unknown keys costs store reads, not
    memory. Safe to share between threads.
    """

    def __init__(
        self,
        store: KeyStore,
        *,
        ttl_seconds: float = KEY_CACHE_SECONDS,
        max_entries: int = KEY_CACHE_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_seconds < 0 or max_entries < 1:
            raise ValueError(
                f"KeyCache needs ttl_seconds >= 0 and max_entries >= 1"
                f" (got {ttl_seconds}, {max_entries})"
            )
        self.store = store
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self.clock = clock
        # Insertion order is expiry order (one TTL, a monotonic clock, refreshed entries are
        # re-inserted at the end), so the first entry is always the next to expire.
        self._found: dict[str, tuple[float, ApiKey]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._found)

    def key_for_hash(self, key_hash: str) -> ApiKey | None:
        """The active key with this hash, as the store said at most ``ttl_seconds`` ago;
        None if the store does not know it (or it is revoked)."""
        now = self.clock()
        with self._lock:
            cached = self._found.get(key_hash)
        if cached is not None and now < cached[0]:
            return cached[1]
        found = self.store.key_for_hash(key_hash)
        with self._lock:
            self._found.pop(key_hash, None)
            if found is not None:
                while len(self._found) >= self.max_entries:
                    del self._found[next(iter(self._found))]
                self._found[key_hash] = (now + self.ttl_seconds, found)
        return found


def authenticate(keys: KeyCache | KeyStore, authorization: str | None) -> ApiKey:
    """The key behind an ``Authorization: Bearer <key>`` header, or ``Unauthorized``."""
    if not authorization:
        raise Unauthorized("missing Authorization header; send 'Authorization: Bearer <key>'")
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <key>'")
    found = keys.key_for_hash(hash_key(key.strip()))
    if found is None:
        raise Unauthorized("unknown or revoked API key")
    return found
