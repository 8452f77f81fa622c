"""``reelforge generate | status | cancel | download | list | delete``: the SDK from the
command line.

Exit codes: 0 done, 1 the generation failed, 2 a usage error (refused input, no key, an
output file that exists), 3 timeout, 4 the server could not be reached, 5 no generation of
that id for this key. Messages go to stderr.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from reelforge.client import (
    ApiError,
    Client,
    Generation,
    GenerationFailed,
    Page,
    Timeout,
    TransportError,
)
from reelforge.contract import Resolution, Status
from reelforge.errors import InvalidRequest
from reelforge.settings import Settings

err = Console(stderr=True, soft_wrap=True)  # a message is one line, however long (paths)
out = Console()

NOT_FOUND = 5
"""The exit code for an id the server does not know for this key."""
CANCELLED = "Cancelled"
"""``error.name`` of a generation its client cancelled."""
LIST_LIMIT = 20
"""Generations ``reelforge list`` shows without ``--limit`` (the API's default page)."""
ALL_PAGE = 100
"""Generations per request for ``reelforge list --all`` (the API's largest page)."""
STATUS_STYLES = {Status.COMPLETED: "green", Status.ERROR: "red"}

BaseUrl = Annotated[
    str | None, typer.Option("--base-url", help="API root with /v2 [REELFORGE_BASE_URL].")
]
ApiKeyOption = Annotated[
    str | None, typer.Option("--api-key", help="The API key [REELFORGE_API_KEY].")
]
ForceOption = Annotated[bool, typer.Option("--force", help="Overwrite the output file.")]


def client_for(settings: Settings, base_url: str | None, api_key: str | None) -> Client:
    """A client for the flags, else the settings, else the local ``reelforge serve``."""
    key = api_key or (settings.api_key.get_secret_value() if settings.api_key else None)
    if key is None:
        stored = settings.local_key_path
        if not stored.exists():
            err.print(
                "[red]error:[/red] no API key: pass --api-key, set REELFORGE_API_KEY, or start "
                f"`reelforge serve` here first (it keeps its key in {stored})"
            )
            raise typer.Exit(2)
        key = stored.read_text().strip()
    return Client(base_url or settings.client_base_url, key)


def generate(
    settings: Settings,
    prompt: str,
    image: Path | None,
    last_image: Path | None,
    duration: int,
    resolution: Resolution,
    model: str,
    output: Path,
    as_json: bool,
    timeout: float,
    force: bool,
    base_url: str | None,
    api_key: str | None,
) -> None:
    refuse_overwrite(output, force)
    with client_for(settings, base_url, api_key) as client, _exit_codes(client.base_url):
        created = client.create(
            prompt,
            model=model,
            first_frame_image=image,
            last_frame_image=last_image,
            duration=duration,
            resolution=resolution.value,
        )
        started = time.monotonic()
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            console=err,
            disable=as_json,
        ) as progress:
            task = progress.add_task("queued", total=100)

            def show(generation: Generation) -> None:
                progress.update(
                    task, description=outlook(generation), completed=generation.progress or 0
                )

            done = client.wait(created.id, timeout=timeout, on_progress=show)
            client.download(done, output)
        if as_json:
            out.print_json(json.dumps(done.raw))
        else:
            out.print(f"{output}  ({time.monotonic() - started:.1f} s)")
            out.print(done.video_url or "", soft_wrap=True)


def status(
    settings: Settings, generation_id: str, base_url: str | None, api_key: str | None
) -> None:
    with (
        client_for(settings, base_url, api_key) as client,
        _exit_codes(client.base_url, generation_id),
    ):
        out.print_json(json.dumps(client.get(generation_id).raw))


def cancel(
    settings: Settings,
    generation_id: str,
    as_json: bool,
    base_url: str | None,
    api_key: str | None,
) -> None:
    """Cancel unless the generation has ended, and say which of the outcomes it was."""
    with (
        client_for(settings, base_url, api_key) as client,
        _exit_codes(client.base_url, generation_id),
    ):
        before = client.get(generation_id)
        after = before if before.done else client.cancel(generation_id)
    if as_json:
        out.print_json(json.dumps(after.raw))
    elif before.done:
        out.print(
            f"{escape(generation_id)} had already ended ({escape(_state(before))}); "
            "nothing to cancel"
        )
    elif after.error_name == CANCELLED:
        out.print(f"{escape(generation_id)} cancelled")
    elif after.done:
        ending = escape(_state(after))
        out.print(f"{escape(generation_id)} ended before the cancel arrived ({ending})")
    else:
        out.print(f"cancel requested: {escape(generation_id)} stops at its next step")


def download(
    settings: Settings,
    generation_id: str,
    output: Path,
    force: bool,
    base_url: str | None,
    api_key: str | None,
) -> None:
    refuse_overwrite(output, force)
    with (
        client_for(settings, base_url, api_key) as client,
        _exit_codes(client.base_url, generation_id),
    ):
        generation = client.get(generation_id)
        if generation.status is Status.ERROR:
            raise GenerationFailed(
                generation_id, generation.error_name or "Error", generation.error_message or ""
            )
        if generation.video_url is None:
            state = "its video was deleted" if generation.done else "no video yet"
            err.print(f"[red]error:[/red] {escape(generation_id)} is {generation.status}: {state}")
            raise typer.Exit(2)
        client.download(generation, output)
        out.print(str(output))


def list_generations(
    settings: Settings,
    limit: int | None,
    everything: bool,
    after: str | None,
    as_json: bool,
    base_url: str | None,
    api_key: str | None,
) -> None:
    """Show the key's generations, newest first: ``limit`` of them (20 by default) or, with
    ``everything``, all of them, fetched a page of 100 at a time."""
    if everything and limit is not None:
        err.print("[red]error:[/red] --all and --limit: give one of them")
        raise typer.Exit(2)
    with client_for(settings, base_url, api_key) as client, _exit_codes(client.base_url):
        if everything:
            found = tuple(client.list(after=after, limit=ALL_PAGE))
            page = Page(found, False, found[-1].id if found else None, {})
        else:
            page = client.list_page(after=after, limit=limit or LIST_LIMIT)
    if as_json:
        data = [generation.raw for generation in page.data]
        out.print_json(
            json.dumps({"data": data, "has_more": page.has_more, "last_id": page.last_id})
        )
    elif not page.data:
        err.print("no generations for this key" + (f" after {escape(after)}" if after else ""))
    else:
        out.print(_table(page.data))
    if page.has_more and not as_json:
        err.print(f"more: reelforge list --after {escape(page.last_id or '')}, or --all")


def _table(generations: tuple[Generation, ...]) -> Table:
    """One row a generation: its id, its status with the progress or the error's name, when
    it was made, how long it took, and its model: on a narrow terminal only the model is
    cut."""
    rows = [_row(generation) for generation in generations]
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for n, header in enumerate(("id", "status", "created", "took")):
        width = max([len(header), *(len(row[n]) for row in rows)])
        table.add_column(header, no_wrap=True, min_width=width)
    table.add_column("model", no_wrap=True, overflow="ellipsis")
    for generation, row in zip(generations, rows, strict=True):
        style = STATUS_STYLES.get(generation.status, "yellow")
        table.add_row(*(Text(cell, style=style if n == 1 else "") for n, cell in enumerate(row)))
    return table


def _row(generation: Generation) -> tuple[str, str, str, str, str]:
    created, finished = generation.created_at, generation.finished_at
    return (
        generation.id,
        _state(generation),
        "" if created is None else _when(created),
        "" if created is None or finished is None else f"{finished - created:.1f} s",
        generation.model or "",
    )


def _when(moment: float) -> str:
    """``14:05`` for a moment of today, ``12-01`` (month-day) for an earlier one: local time."""
    today = time.localtime()[:3] == time.localtime(moment)[:3]
    return time.strftime("%H:%M" if today else "%m-%d", time.localtime(moment))


def outlook(generation: Generation) -> str:
    """The progress bar's label: ``queued, 3rd, ~40 s``, ``generating, ~12 s``, ``queued``
    (each part only when the server sent it)."""
    parts = [generation.status.value]
    if generation.queue_position is not None:
        parts.append(_ordinal(generation.queue_position))
    if generation.eta_seconds is not None:
        parts.append(f"~{generation.eta_seconds} s")
    return ", ".join(parts)


def _ordinal(n: int) -> str:
    """``1st``, ``2nd``, ``3rd``, ``4th``, ``11th``, ``22nd``."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _state(generation: Generation) -> str:
    """``completed``, ``error: EngineFailed``, ``generating 40%``."""
    if generation.status is Status.ERROR:
        return f"error: {generation.error_name or 'Error'}"
    if generation.status is Status.GENERATING and generation.progress is not None:
        return f"{generation.status} {generation.progress}%"
    return str(generation.status)


def delete(
    settings: Settings, generation_id: str, base_url: str | None, api_key: str | None
) -> None:
    """Delete a generation with its video and inputs (cancelled first if it is not done)."""
    with (
        client_for(settings, base_url, api_key) as client,
        _exit_codes(client.base_url, generation_id),
    ):
        client.delete(generation_id)
    out.print(f"deleted {escape(generation_id)} with its video and inputs")


def refuse_overwrite(output: Path, force: bool) -> None:
    """Exit 2 if ``output`` exists and ``--force`` was not given: nothing is overwritten
    silently (checked before anything is sent)."""
    if output.exists() and not force:
        err.print(f"[red]error:[/red] {escape(str(output))} exists; pass --force to overwrite it")
        raise typer.Exit(2)


@contextmanager
def _exit_codes(base_url: str, generation_id: str | None = None) -> Iterator[None]:
    """Turn the SDK's errors into a message on stderr and the documented exit code;
    ``generation_id``: the id the command is about (a 404 then means this key has none)."""
    try:
        yield
    except GenerationFailed as error:
        err.print(
            f"[red]generation {escape(error.generation_id)} failed:[/red] "
            f"{escape(error.name)}: {escape(error.message)}"
        )
        raise typer.Exit(1) from error
    except ApiError as error:
        if generation_id is None or error.status != 404 or error.name == "HTTPError":
            err.print(f"[red]refused:[/red] {escape(error.message)}")
            raise typer.Exit(2) from error
        err.print(f"[red]error:[/red] no generation {escape(generation_id)} for this key")
        raise typer.Exit(NOT_FOUND) from error
    except InvalidRequest as error:
        err.print(f"[red]refused:[/red] {escape(error.message)}")
        raise typer.Exit(2) from error
    except Timeout as error:
        err.print(f"[red]timeout:[/red] {escape(str(error))}; raise --timeout or check the workers")
        raise typer.Exit(3) from error
    except TransportError as error:
        err.print(
            f"[red]cannot reach {escape(base_url)}:[/red] {escape(str(error))}; "
            "is `reelforge serve` running?"
        )
        raise typer.Exit(4) from error
