"""Bearer API keys: made here, stored only as SHA-256 hashes, checked on every call."""

from __future__ import annotations

import hashlib
import secrets

from reelforge.errors import Unauthorized
from reelforge.jobs.model import ApiKey, KeyStore

KEY_PREFIX = "rf_"


def new_key() -> str:
    """A fresh random key (256 bits); shown once, never stored."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The stored form of a key (keys are random, so a plain hash cannot be reversed)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def register(store: KeyStore, key: str, *, name: str) -> ApiKey:
    """Store ``key`` (hashed) unless it is already known; returns its record."""
    known = store.key_for_hash(hash_key(key))
    if known is not None:
        return known
    return store.add_key(name=name, key_hash=hash_key(key), prefix=key[:8])


def authenticate(store: KeyStore, authorization: str | None) -> ApiKey:
    """The key behind an ``Authorization: Bearer <key>`` header, or ``Unauthorized``."""
    if not authorization:
        raise Unauthorized("missing Authorization header; send 'Authorization: Bearer <key>'")
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <key>'")
    found = store.key_for_hash(hash_key(key.strip()))
    if found is None:
        raise Unauthorized("unknown or revoked API key")
    return found
