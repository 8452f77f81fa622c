from __future__ import annotations

from pathlib import Path

from reelforge.settings import Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_setting_is_in_the_readme_table() -> None:
    text = README.read_text()
    missing = [
        f"REELFORGE_{name.upper()}"
        for name in Settings.model_fields
        if f"`REELFORGE_{name.upper()}`" not in text
    ]
    assert missing == []


def test_readme_names_the_test_command_ci_runs() -> None:
    command = "pip install -e '.[dev]' && pytest"
    assert command in README.read_text()
    assert command in (README.parent / ".ci" / "run").read_text()
