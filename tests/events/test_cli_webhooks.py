"""The key commands for webhooks, run as a user runs them: ``keys create --webhook`` prints
the key and its secret, ``keys update --webhook|--no-webhook`` changes the endpoint,
``keys webhook-secret`` shows the secret again, ``webhooks list`` the attempts."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import closing
from pathlib import Path

from standardwebhooks import Webhook

from reelforge.api.auth import hash_key
from reelforge.jobs.sqlite import SQLiteJobStore


def reelforge(*args: str, data: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        "REELFORGE_DATA_DIR": str(data),
    }
    return subprocess.run(
        [sys.executable, "-m", "reelforge", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def webhook_of(data: Path, key: str) -> str | None:
    with closing(SQLiteJobStore(data / "reelforge.sqlite3")) as store:
        record = store.key_for_hash(hash_key(key))
        assert record is not None
        found = store.key_webhook(record.id, new_secret="whsec_unused")
    assert found is not None
    return found.url


def test_keys_carry_a_webhook_endpoint_and_secret(tmp_path: Path) -> None:
    url = "https://shop.example/hook"
    made = reelforge("keys", "create", "--name", "shop", "--webhook", url, data=tmp_path)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    secret = made.stderr.split("(reelforge keys webhook-secret): ")[1].split()[0]
    assert secret.startswith("whsec_")
    Webhook(secret)  # a secret the package takes
    assert webhook_of(tmp_path, key) == url
    shown = reelforge("keys", "webhook-secret", key[:8], data=tmp_path)
    assert (shown.returncode, shown.stdout.strip()) == (0, secret)
    other = "https://other.example/hook"
    changed = reelforge("keys", "update", key[:8], "--webhook", other, data=tmp_path)
    assert changed.returncode == 0, changed.stderr
    assert webhook_of(tmp_path, key) == other
    removed = reelforge("keys", "update", key[:8], "--no-webhook", data=tmp_path)
    assert removed.returncode == 0, removed.stderr
    assert webhook_of(tmp_path, key) is None
    listed = reelforge("webhooks", "list", data=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "webhook id" in listed.stdout


def test_a_bad_webhook_url_or_unknown_key_exits_2(tmp_path: Path) -> None:
    bad = reelforge("keys", "create", "--webhook", "ftp://x", data=tmp_path)
    assert bad.returncode == 2
    assert "--webhook: must be an http(s) URL" in bad.stderr
    unknown = reelforge("keys", "webhook-secret", "rf_nobody", data=tmp_path)
    assert unknown.returncode == 2
    assert "no active key 'rf_nobody'" in unknown.stderr
