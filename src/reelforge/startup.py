"""What a process checks and prepares before it serves: its data directory, the configured
key, and that it stores videos where every other process on its database does.

Each check that fails raises ``StartRefused`` with one line that says what to change; the
CLI prints it and exits non-zero.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from reelforge.api.auth import KeyRevoked, new_key, register
from reelforge.jobs.model import Store
from reelforge.settings import Settings
from reelforge.storage.local import load_or_create_secret

MIN_API_KEY_CHARS: Final = 20
"""The shortest ``REELFORGE_API_KEY`` accepted (``reelforge keys create`` makes 46)."""
STORAGE: Final = "storage"
"""The deployment value naming where videos and input images live."""


class StartRefused(Exception):
    """The process cannot start as configured; the message (one line) says what to change."""


def make_data_dir(path: Path) -> None:
    """Create the data directory readable by its owner only (0700), with any missing parents;
    an existing one keeps the mode it has."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)


def ensure_key(settings: Settings, store: Store) -> str | None:
    """Register ``REELFORGE_API_KEY``; with no key at all, make one, keep it in the data dir
    for local tools and return it (to be shown once).

    Raises ``StartRefused`` if the configured key is shorter than ``MIN_API_KEY_CHARS`` or
    was revoked.
    """
    if settings.api_key is not None:
        key = settings.api_key.get_secret_value()
        if len(key) < MIN_API_KEY_CHARS:
            raise StartRefused(
                f"REELFORGE_API_KEY is {len(key)} characters long; use at least "
                f"{MIN_API_KEY_CHARS} (reelforge keys create makes one)"
            )
        try:
            record = register(store, key, name="REELFORGE_API_KEY")
        except KeyRevoked as exc:
            raise StartRefused(
                f"REELFORGE_API_KEY is a revoked key ({exc}); set a new one "
                "(reelforge keys create) or unset it"
            ) from exc
        if settings.webhook_secret is not None:
            _set_webhook_secret(store, record.id, settings.webhook_secret.get_secret_value())
    if store.list_keys():
        return None
    return _first_key(settings, store)


def _set_webhook_secret(store: Store, key_id: str, secret: str) -> None:
    """``REELFORGE_WEBHOOK_SECRET`` becomes the signing secret of ``REELFORGE_API_KEY``'s key,
    keeping its default endpoint."""
    current = store.key_webhook(key_id, new_secret=secret)
    store.set_key_webhook(key_id, url=None if current is None else current.url, secret=secret)


def _first_key(settings: Settings, store: Store) -> str:
    """A new key, written to ``local_key_path`` (0600) before the store learns it: a key is
    never registered whose value was not kept; a failed registration removes the file."""
    make_data_dir(settings.data_dir)
    key = new_key()
    path = settings.local_key_path
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key + "\n")
    try:
        register(store, key, name="first start")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return key


def storage_identity(settings: Settings) -> str:
    """Where this process keeps videos: ``s3://bucket/prefix``, or ``local:<id>`` with a
    random id made once in the data directory (``storage-id``)."""
    if settings.s3_bucket is not None:
        return f"s3://{settings.s3_bucket}/{settings.s3_prefix}"
    make_data_dir(settings.data_dir)
    return "local:" + load_or_create_secret(settings.data_dir / "storage-id").hex()[:32]


def check_storage(settings: Settings, store: Store) -> None:
    """Refuse to start if this process would keep videos elsewhere than the first process on
    the same database did (a worker on another machine writing into its own data directory
    completes jobs whose links 404)."""
    mine = storage_identity(settings)
    agreed = store.deployment_value(STORAGE, mine)
    if agreed == mine:
        return
    where = f"S3 ({agreed[5:]})" if agreed.startswith("s3://") else "another data directory"
    raise StartRefused(
        f"this database's videos are kept in {where}, not in this process's "
        f"{_describe(settings)}: processes sharing a database must share storage; use S3 "
        "(REELFORGE_S3_BUCKET) or one shared REELFORGE_DATA_DIR"
    )


def _describe(settings: Settings) -> str:
    if settings.s3_bucket is not None:
        return f"S3 ({settings.s3_bucket}/{settings.s3_prefix})"
    return f"data directory {settings.data_dir.resolve()}"
