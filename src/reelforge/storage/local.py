"""Videos and input images in a local directory, served through signed, expiring URLs.

A URL carries ``expires`` (epoch seconds) and ``signature`` = HMAC-SHA256 over the file's
key and its expiry; a changed key, expiry or signature is refused (403), an old one is gone
(410). Files are moved in whole (rename), so a partial video is never served.
"""

from __future__ import annotations

import glob
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from reelforge.errors import Forbidden, Gone, NotFound
from reelforge.storage.base import sweep_directory

_KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_./")


class LocalStorage:
    """Files under ``root``: ``inputs/<sha256>`` for images, ``videos/<id>.mp4`` for videos."""

    def __init__(
        self,
        root: Path,
        *,
        secret: bytes,
        url_ttl_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root
        self._secret = secret
        self._ttl = url_ttl_seconds
        self._clock = clock
        root.mkdir(mode=0o700, parents=True, exist_ok=True)  # the data dir: its owner's only
        for folder in ("inputs", "videos", "tmp"):
            (root / folder).mkdir(exist_ok=True)

    @property
    def scratch(self) -> Path:
        """A directory on the same file system, for files about to be moved in."""
        return self.root / "tmp"

    def sweep_scratch(self, max_age_seconds: float) -> int:
        """Remove scratch files untouched for ``max_age_seconds`` (left by killed workers;
        a file being written is touched with every frame). Returns how many went."""
        return sweep_directory(self.scratch, self._clock() - max_age_seconds)

    def save_input(self, data: bytes) -> str:
        """Keep an input image (mode 0600); returns its key (the same bytes give the same key)."""
        key = f"inputs/{hashlib.sha256(data).hexdigest()}"
        target = self.root / key
        if not target.exists():
            partial = self.scratch / f"{target.name}.{secrets.token_hex(4)}.part"
            descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
            os.replace(partial, target)
        return key

    def load_input(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def save_video(self, name: str, source: Path) -> str:
        """Move a finished MP4 in (atomically) as ``videos/<name>.mp4``; returns its key."""
        key = f"videos/{name}.mp4"
        os.replace(source, self._path(key))
        return key

    def discard(self, key: str) -> None:
        """Remove a stored file (a result nobody will point to)."""
        self._path(key).unlink(missing_ok=True)

    def discard_videos(self, name_prefix: str) -> int:
        """Remove every ``videos/<name_prefix>*.mp4``; how many went."""
        folder = self._path("videos")
        removed = 0
        for path in folder.glob(f"{glob.escape(name_prefix)}*.mp4"):
            path.unlink(missing_ok=True)
            removed += 1
        return removed

    def video_url(self, key: str, *, base_url: str) -> str:
        """A signed link to ``key`` under ``base_url``, valid for the configured lifetime."""
        expires = int(self._clock()) + self._ttl
        # Both values are URL-safe as they are (an integer, hex digits): no encoding needed.
        signed = f"expires={expires}&signature={self._sign(key, expires)}"
        return f"{base_url.rstrip('/')}/files/{quote(key)}?{signed}"

    def open_signed(self, key: str, expires: int, signature: str) -> Path:
        """The file behind a signed link; ``Forbidden`` if tampered, ``Gone`` if expired."""
        # Compared as bytes: ``compare_digest`` refuses a str with non-ASCII characters.
        given = signature.encode("utf-8", "replace")
        if not hmac.compare_digest(self._sign(key, expires).encode(), given):
            raise Forbidden("the link's signature does not match")
        if expires < self._clock():
            raise Gone("the link has expired; fetch the generation again for a fresh one")
        return self.file(key)

    def file(self, key: str) -> Path:
        """The stored file ``key`` (for the API's own authenticated reads); ``NotFound`` if
        there is none."""
        path = self._path(key)
        if not path.is_file():
            raise NotFound("no such file")
        return path

    def _sign(self, key: str, expires: int) -> str:
        message = f"{key}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def _path(self, key: str) -> Path:
        if not set(key) <= _KEY_CHARS or ".." in key or key.startswith("/"):
            raise NotFound("no such file")
        return self.root / key


def load_or_create_secret(path: Path) -> bytes:
    """The secret kept at ``path``, created (32 random bytes, mode 0600) on first use.

    Several processes may start at once: the file appears whole (hard link of a finished
    temporary file) and whoever links first wins.
    """
    if path.exists():
        return path.read_bytes()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(secrets.token_bytes(32))
    try:
        os.link(partial, path)
    except FileExistsError:
        pass
    finally:
        partial.unlink()
    return path.read_bytes()
