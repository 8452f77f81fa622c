"""The API processes' key cache: a key found in the store is trusted for ``KEY_CACHE_SECONDS``
(one store read per key per window), a revoked one is refused once its window ends, unknown
keys are never remembered, and the cache holds at most ``max_entries`` keys."""

from __future__ import annotations

import pytest

from reelforge.api.auth import KEY_CACHE_SECONDS, KeyCache, authenticate, hash_key, new_key
from reelforge.errors import Unauthorized
from reelforge.jobs.model import NO_LIMITS, ApiKey, KeyLimits, Priority


class CountingKeys:
    """A KeyStore in a dict that counts ``key_for_hash`` calls."""

    def __init__(self) -> None:
        self.keys: dict[str, ApiKey] = {}
        self.lookups = 0

    def add_key(
        self,
        *,
        name: str,
        key_hash: str,
        prefix: str,
        limits: KeyLimits = NO_LIMITS,
        priority: Priority = Priority.NORMAL,
    ) -> ApiKey:
        key = ApiKey(f"k{len(self.keys)}", name, 0.0, None, prefix, limits, priority)
        self.keys[key_hash] = key
        return key

    def key_for_hash(self, key_hash: str) -> ApiKey | None:
        self.lookups += 1
        key = self.keys.get(key_hash)
        return key if key is not None and key.revoked_at is None else None

    def key_revoked(self, key_hash: str) -> bool:
        key = self.keys.get(key_hash)
        return key is not None and key.revoked_at is not None

    def list_keys(self) -> list[ApiKey]:
        return list(self.keys.values())

    def revoke_key(self, key_id_or_prefix: str) -> bool:
        for key_hash, key in self.keys.items():
            if key_id_or_prefix in (key.id, key.prefix) and key.revoked_at is None:
                self.keys[key_hash] = ApiKey(key.id, key.name, 0.0, 1.0, key.prefix)
                return True
        return False

    def set_key_priority(self, key_id_or_prefix: str, priority: Priority) -> bool:
        raise NotImplementedError  # the cache never changes keys

    def set_key_limits(self, key_id_or_prefix: str, limits: KeyLimits) -> ApiKey | None:
        raise NotImplementedError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def stored_key(store: CountingKeys) -> tuple[str, ApiKey]:
    """A new plaintext key and its record, added to ``store``."""
    key = new_key()
    return key, store.add_key(name="test", key_hash=hash_key(key), prefix=key[:8])


def test_a_key_is_read_from_the_store_once_per_window() -> None:
    store, clock = CountingKeys(), Clock()
    cache = KeyCache(store, clock=clock)
    key, record = stored_key(store)
    for _ in range(5):
        clock.now += KEY_CACHE_SECONDS / 10
        assert authenticate(cache, f"Bearer {key}") == record
    assert store.lookups == 1
    clock.now += KEY_CACHE_SECONDS
    assert authenticate(cache, f"Bearer {key}") == record
    assert store.lookups == 2


def test_a_revoked_key_is_refused_once_its_window_ends() -> None:
    store, clock = CountingKeys(), Clock()
    cache = KeyCache(store, clock=clock)
    key, record = stored_key(store)
    authenticate(cache, f"Bearer {key}")
    assert store.revoke_key(record.id)
    clock.now += KEY_CACHE_SECONDS - 0.001
    assert authenticate(cache, f"Bearer {key}") == record  # the documented window
    clock.now += 0.001
    with pytest.raises(Unauthorized, match="unknown or revoked"):
        authenticate(cache, f"Bearer {key}")
    with pytest.raises(Unauthorized, match="unknown or revoked"):
        authenticate(cache, f"Bearer {key}")
    assert store.lookups == 3


def test_unknown_keys_are_not_remembered() -> None:
    store, clock = CountingKeys(), Clock()
    cache = KeyCache(store, clock=clock)
    key = new_key()
    for _ in range(3):
        with pytest.raises(Unauthorized):
            authenticate(cache, f"Bearer {key}")
    assert store.lookups == 3
    assert len(cache) == 0
    store.add_key(name="late", key_hash=hash_key(key), prefix=key[:8])
    assert authenticate(cache, f"Bearer {key}").name == "late"


def test_the_cache_holds_at_most_max_entries_keys() -> None:
    store, clock = CountingKeys(), Clock()
    cache = KeyCache(store, max_entries=3, clock=clock)
    keys = [stored_key(store)[0] for _ in range(5)]
    for key in keys:
        clock.now += 0.01
        authenticate(cache, f"Bearer {key}")
    assert len(cache) == 3
    store.lookups = 0
    for key in keys[2:]:
        authenticate(cache, f"Bearer {key}")
    assert store.lookups == 0  # the three found last are kept
    authenticate(cache, f"Bearer {keys[0]}")
    assert store.lookups == 1
    assert len(cache) == 3


def test_refusals_come_before_any_lookup() -> None:
    store = CountingKeys()
    cache = KeyCache(store, clock=Clock())
    for header in (None, "", "Basic abc", "Bearer ", "Bearer  "):
        with pytest.raises(Unauthorized):
            authenticate(cache, header)
    assert store.lookups == 0


@pytest.mark.parametrize(("ttl", "entries"), [(-1.0, 10), (2.0, 0)])
def test_impossible_settings_are_refused(ttl: float, entries: int) -> None:
    with pytest.raises(ValueError, match="KeyCache needs"):
        KeyCache(CountingKeys(), ttl_seconds=ttl, max_entries=entries)
