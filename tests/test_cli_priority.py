"""``reelforge keys create/update --priority``: the key's priority in the store."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from reelforge.api.auth import hash_key
from reelforge.cli import app
from reelforge.jobs.model import Priority
from reelforge.jobs.sqlite import SQLiteJobStore
from reelforge.settings import Settings


def keys(data_dir: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["keys", *args], env={"REELFORGE_DATA_DIR": str(data_dir)})
    return result.exit_code, result.stdout, result.stderr


def priority_of(data_dir: Path, key: str) -> Priority:
    store = SQLiteJobStore(Settings(data_dir=data_dir).database_path)
    try:
        found = store.key_for_hash(hash_key(key))
    finally:
        store.close()
    assert found is not None
    return found.priority


def test_a_key_is_made_and_changed_with_a_priority(tmp_path: Path) -> None:
    code, stdout, _ = keys(tmp_path, "create", "--name", "batch", "--priority", "low")
    assert code == 0
    key = stdout.strip()
    assert priority_of(tmp_path, key) is Priority.LOW
    code, stdout, _ = keys(tmp_path, "update", key[:8], "--priority", "high")
    assert code == 0
    assert stdout.strip().endswith("defaults, priority high")
    assert priority_of(tmp_path, key) is Priority.HIGH
    _, listing, _ = keys(tmp_path, "list")
    assert "high" in listing


def test_a_priority_is_checked_and_an_unknown_key_refused(tmp_path: Path) -> None:
    code, _, stderr = keys(tmp_path, "create", "--priority", "urgent")
    assert code == 2
    assert "urgent" in stderr
    code, _, stderr = keys(tmp_path, "update", "rf_nope", "--priority", "high")
    assert code == 2
    assert "no active key 'rf_nope'" in stderr
