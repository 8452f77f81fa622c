"""What the ``reelforge`` client commands say and exit with, in-process against a scripted
server on loopback (each answer chosen by the test): cancel's outcomes, a failed download,
an output file that exists, a stopped server; and every command's ``--help``, as written."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner, Result

from reelforge import __version__
from reelforge.cli import app
from tests.client.loopback import (
    LEGACY,
    Answer,
    ScriptedServer,
    as_json,
    generation,
    in_turn,
    serving,
)
from tests.service import free_port

KEY = "rf_cli-message-test-key"


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with serving() as scripted:
        yield scripted


def one_line(text: str) -> str:
    """``text`` with line wrapping undone."""
    return " ".join(text.split())


def invoke(server: ScriptedServer, *args: str) -> Result:
    flags = ["--base-url", f"{server.base_url}/v2", "--api-key", KEY]
    return CliRunner().invoke(app, [*args, *flags])


# --- cancel -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after", "said"),
    [
        ("generating", generation("generating"), "cancel requested: g1 stops at its next step"),
        ("queued", generation("error", error=("Cancelled", "cancelled")), "g1 cancelled"),
        (
            "generating",
            generation("completed", url="http://x/v.mp4"),
            "g1 ended before the cancel arrived (completed)",
        ),
    ],
    ids=["running", "queued", "ended-meanwhile"],
)
def test_cancel_says_what_the_cancel_did(
    server: ScriptedServer, before: str, after: Answer, said: str
) -> None:
    server.route("GET", LEGACY, in_turn(generation(before)))
    server.route("DELETE", LEGACY, in_turn(after))
    done = invoke(server, "cancel", "g1")
    assert done.exit_code == 0, done.output
    assert one_line(done.stdout) == said
    assert [seen.query for seen in server.requests("DELETE", LEGACY)] == [{"generation_id": "g1"}]


@pytest.mark.parametrize(
    ("ended", "said"),
    [
        (generation("completed", url="http://x/v.mp4"), "completed"),
        (generation("error", error=("EngineFailed", "out of [memory]")), "error: EngineFailed"),
    ],
    ids=["completed", "error"],
)
def test_cancelling_an_ended_generation_says_so_exits_0_and_sends_no_cancel(
    server: ScriptedServer, ended: Answer, said: str
) -> None:
    server.route("GET", LEGACY, in_turn(ended))
    done = invoke(server, "cancel", "g1")
    assert done.exit_code == 0, done.output
    assert one_line(done.stdout) == f"g1 had already ended ({said}); nothing to cancel"
    assert server.requests("DELETE", LEGACY) == []


def test_cancel_json_prints_the_generation_as_the_server_has_it(server: ScriptedServer) -> None:
    server.route("GET", LEGACY, in_turn(generation("generating")))
    server.route("DELETE", LEGACY, in_turn(generation("generating", progress=40)))
    done = invoke(server, "cancel", "g1", "--json")
    assert done.exit_code == 0, done.output
    assert '"progress": 40' in done.stdout


@pytest.mark.parametrize("command", ["status", "cancel", "download"])
def test_an_unknown_id_exits_5_but_an_unknown_route_is_a_refusal(
    server: ScriptedServer, tmp_path: Path, command: str
) -> None:
    missing = {"error": {"name": "NotFound", "message": "no generation 'g[9]'"}}
    server.route("GET", LEGACY, in_turn(as_json(missing, 404)))
    output = ["-o", str(tmp_path / "v.mp4")] if command == "download" else []
    done = invoke(server, command, "g[9]", *output)
    assert done.exit_code == 5, done.output
    assert one_line(done.stderr) == "error: no generation g[9] for this key"

    no_route = {"error": {"name": "HTTPError", "message": "Not Found"}}
    server.route("GET", LEGACY, in_turn(as_json(no_route, 404)))
    done = invoke(server, command, "g[9]", *output)
    assert done.exit_code == 2, done.output
    assert one_line(done.stderr) == "refused: Not Found"


# --- download and output files ------------------------------------------------------------


def test_downloading_a_failed_generation_says_it_failed_with_its_error(
    server: ScriptedServer, tmp_path: Path
) -> None:
    failure = ("EngineFailed", "out of memory at [step 3]")
    server.route("GET", LEGACY, in_turn(generation("error", error=failure)))
    done = invoke(server, "download", "g1", "-o", str(tmp_path / "v.mp4"))
    assert done.exit_code == 1, done.output
    assert one_line(done.stderr) == (
        "generation g1 failed: EngineFailed: out of memory at [step 3]"
    )
    assert list(tmp_path.iterdir()) == []


def test_downloading_an_unfinished_generation_says_no_video_yet(
    server: ScriptedServer, tmp_path: Path
) -> None:
    server.route("GET", LEGACY, in_turn(generation("generating", progress=30)))
    done = invoke(server, "download", "g1", "-o", str(tmp_path / "v.mp4"))
    assert done.exit_code == 2, done.output
    assert one_line(done.stderr) == "error: g1 is generating: no video yet"


@pytest.mark.parametrize(
    "args",
    [["generate", "A lighthouse", "--timeout", "5"], ["download", "g1"]],
    ids=["generate", "download"],
)
def test_an_existing_output_file_is_refused_before_anything_is_sent(
    server: ScriptedServer, tmp_path: Path, args: list[str]
) -> None:
    existing = tmp_path / "mine.mp4"
    existing.write_bytes(b"my own video")
    done = invoke(server, *args, "-o", str(existing))
    assert done.exit_code == 2, done.output
    assert one_line(done.stderr) == f"error: {existing} exists; pass --force to overwrite it"
    assert existing.read_bytes() == b"my own video"
    assert server.seen == []


def test_force_overwrites_an_existing_output_file(server: ScriptedServer, tmp_path: Path) -> None:
    url = f"{server.base_url}/files/v.mp4"
    server.route("GET", LEGACY, in_turn(generation("completed", url=url)))
    server.route("GET", "/files/v.mp4", in_turn(as_json({"a": "video"})))
    existing = tmp_path / "mine.mp4"
    existing.write_bytes(b"my own video")
    done = invoke(server, "download", "g1", "-o", str(existing), "--force")
    assert done.exit_code == 0, done.output
    assert existing.read_bytes() == b'{"a": "video"}'


# --- list -------------------------------------------------------------------------------


def page_of(*generations: dict[str, object], has_more: bool = False) -> Answer:
    last = generations[-1]["id"] if generations else None
    return as_json({"data": list(generations), "has_more": has_more, "last_id": last})


def test_the_list_table_shows_progress_and_error_names(server: ScriptedServer) -> None:
    made = 1_780_000_000.0  # 2026-05-28: shown as its date
    rows: list[dict[str, object]] = [
        {"id": "a" * 32, "status": "generating", "progress": 40, "model": "preview"},
        {"id": "b" * 32, "status": "error", "error": {"name": "EngineFailed", "message": "x"}},
        {"id": "c" * 32, "status": "completed", "created_at": made, "finished_at": made + 2.25},
        {"id": "d" * 32, "status": "queued", "progress": 0, "created_at": time.time()},
    ]
    server.route("GET", LEGACY, in_turn(page_of(*rows)))
    done = invoke(server, "list")
    assert done.exit_code == 0, done.output
    lines = [one_line(line) for line in done.stdout.splitlines() if line.strip()]
    assert lines[0].startswith("id status created took m")  # the model is cut at 80 columns
    assert lines[2].startswith(f"{'a' * 32} generating 40% p")
    assert lines[3] == f"{'b' * 32} error: EngineFailed"
    created = time.strftime("%m-%d", time.localtime(made))
    assert lines[4] == f"{'c' * 32} completed {created} 2.2 s"
    assert re.fullmatch(f"{'d' * 32} queued [0-2][0-9]:[0-5][0-9]", lines[5])  # today: time
    assert server.requests("GET", LEGACY)[0].query == {"limit": "20"}


def test_an_empty_list_says_so(server: ScriptedServer) -> None:
    server.route("GET", LEGACY, in_turn(page_of()))
    done = invoke(server, "list", "--after", "z")
    assert done.exit_code == 0, done.output
    assert (done.stdout, one_line(done.stderr)) == ("", "no generations for this key after z")


# --- a stopped server ----------------------------------------------------------------------


def test_a_stopped_server_is_reported_within_3_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real sleeps: 3 tries 0.5 and 1 s (x jitter 0.5..1) apart, then exit 4 with a hint."""
    monkeypatch.chdir(tmp_path)
    closed = f"http://127.0.0.1:{free_port()}/v2"
    started = time.monotonic()
    done = CliRunner().invoke(app, ["status", "g1", "--base-url", closed, "--api-key", KEY])
    elapsed = time.monotonic() - started
    assert done.exit_code == 4, done.output
    message = one_line(done.stderr)
    assert message.startswith(f"cannot reach {closed}: no connection after 3 tries; last: ")
    assert message.endswith("is `reelforge serve` running?")
    assert 0.75 <= elapsed < 3.0


# --- help texts ----------------------------------------------------------------------------


def help_texts() -> list[tuple[tuple[str, ...], list[str]]]:
    """Each command's path (the group itself first) and the help texts written for it: its
    own, then its arguments' and options'."""
    cases: list[tuple[tuple[str, ...], list[str]]] = []
    pending: list[tuple[tuple[str, ...], Any]] = [((), typer.main.get_command(app))]
    while pending:
        path, command = pending.pop(0)
        written = [command.help, *(getattr(param, "help", None) for param in command.params)]
        cases.append((path, [text for text in written if text]))
        if isinstance(command, TyperGroup):
            pending += [((*path, name), sub) for name, sub in command.commands.items()]
    return cases


@pytest.mark.parametrize(
    ("path", "written"),
    [
        pytest.param(path, written, id=" ".join(path) or "reelforge")
        for path, written in help_texts()
    ],
)
def test_every_help_text_is_shown_as_written(path: tuple[str, ...], written: list[str]) -> None:
    """Each command's and option's help appears whole: [brackets] kept, no markup, no
    reStructuredText backticks."""
    done = CliRunner().invoke(app, [*path, "--help"], terminal_width=100)
    assert done.exit_code == 0, done.output
    shown = one_line(done.stdout)
    for text in written:
        assert one_line(text) in shown
    assert "``" not in shown


def test_the_bracketed_parts_of_help_texts_survive() -> None:
    done = CliRunner().invoke(app, ["generate", "--help"], terminal_width=100)
    shown = one_line(done.stdout)
    assert "camera commands in [brackets]" in shown
    assert "[REELFORGE_API_KEY]" in shown


def test_version_prints_the_version_and_exits_0() -> None:
    done = CliRunner().invoke(app, ["--version"])
    assert done.exit_code == 0, done.output
    assert done.stdout == f"reelforge {__version__}\n"
