"""The ``reelforge`` command line; the only place that prints."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, NoReturn, TypeVar

import typer
from PIL import Image
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from reelforge import __version__, client_cli
from reelforge.contract import DEFAULT_MODEL
from reelforge.errors import InvalidRequest
from reelforge.jobs.model import KeyLimits, Priority
from reelforge.request import JobRequest, Resolution
from reelforge.settings import Settings

if TYPE_CHECKING:
    from reelforge.engines.base import Keyframes

T = TypeVar("T")
MAX_RENDER_SECONDS = 20
"""The longest clip the preview engine makes."""

app = typer.Typer(
    help="reelforge: video generation speaking the Hailuo-02 API.",
    no_args_is_help=True,
    rich_markup_mode=None,  # help texts are plain text: [brackets] are shown as written
    context_settings={"max_content_width": 100},
)
err = Console(stderr=True, soft_wrap=True)  # a message is one line, however long (paths)
out = Console()


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        err.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from exc


def _print_version(asked: bool) -> None:
    if asked:
        out.print(f"reelforge {__version__}")
        raise typer.Exit


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
        ),
    ] = False,
) -> None:
    """Options for every command (only --version so far)."""


@app.command()
def render(
    prompt: Annotated[str, typer.Argument(help="What to show; camera commands in [brackets].")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the MP4.")] = Path(
        "out.mp4"
    ),
    image: Annotated[Path | None, typer.Option("--image", help="First frame (JPG/PNG).")] = None,
    last_image: Annotated[
        Path | None, typer.Option("--last-image", help="Last frame (JPG/PNG).")
    ] = None,
    duration: Annotated[
        int, typer.Option(min=1, max=MAX_RENDER_SECONDS, help="Length in seconds: 1 to 20.")
    ] = 6,
    resolution: Annotated[Resolution, typer.Option(help="768P or 1080P.")] = Resolution.P768,
    seed: Annotated[int | None, typer.Option(help="Seed for the camera's jitter.")] = None,
) -> None:
    """Render a video locally with the preview engine (no server, no model)."""
    from reelforge.engines.preview import PreviewEngine
    from reelforge.media.camera import parse_camera
    from reelforge.media.encoder import EncoderOptions, encode_mp4

    settings = _settings()
    request = JobRequest(prompt=prompt, duration_s=duration, size=resolution, seed=seed)
    try:
        parse_camera(prompt)
        keyframes = _keyframes(image, last_image)
    except InvalidRequest as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from exc
    started = time.perf_counter()
    with Progress(
        TextColumn("rendering"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} frames"),
        TimeElapsedColumn(),
        console=err,
    ) as progress:
        task = progress.add_task("render", total=None)
        video = PreviewEngine().generate(
            request,
            keyframes,
            lambda done, total: progress.update(task, completed=done, total=total),
        )
        encode_mp4(video, output, EncoderOptions(settings.x264_preset, settings.x264_crf))
    elapsed = time.perf_counter() - started
    out.print(
        f"{output}  {video.width}x{video.height}, {video.frame_count} frames at {video.fps} fps "
        f"({video.duration_s:g} s) in {elapsed:.1f} s"
    )


@app.command()
def serve(
    workers: Annotated[int, typer.Option(help="Worker processes to start beside the API.")] = 1,
    api_processes: Annotated[
        int, typer.Option(min=1, help="API processes sharing the port (one per core).")
    ] = 1,
    host: Annotated[str | None, typer.Option(help="Listen address [REELFORGE_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port [REELFORGE_PORT].")] = None,
) -> None:
    """Serve the API (and --workers worker processes, supervised) on one data directory."""
    settings = _settings()
    _metrics_folder(settings.data_dir)  # before any import loads prometheus_client
    import uvicorn

    from reelforge.api.serving import uvicorn_options
    from reelforge.events.stream import SHUTDOWN_GRACE_S
    from reelforge.logs import configure_logging
    from reelforge.runtime import has_upstream, start_job_metrics
    from reelforge.supervise import Supervisor, SupervisorThread

    overrides = {k: v for k, v in {"host": host, "port": port}.items() if v is not None}
    settings = settings.model_copy(update=overrides)
    first_key = _prepare_serve(settings)

    # uvicorn re-raises a SIGTERM once it has shut down; with the default handler that ends
    # the process on the spot, before the workers are stopped. This one exits through the
    # ``finally`` below instead.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    configure_logging(settings.log_format)
    try:
        hosted = has_upstream(settings)
    except ValueError as exc:  # a bad registry
        _refuse(str(exc))
    supervision = SupervisorThread(Supervisor(settings, workers))
    # Hosted models' jobs wait on their providers in a pool of their own (one process).
    upstream = SupervisorThread(Supervisor(settings, int(hosted), upstream=True))
    json_logs = {"log_config": None} if settings.log_format == "json" else {}
    stop_job_metrics = start_job_metrics(settings)
    try:
        out.print(f"reelforge {__version__} on http://{settings.host}:{settings.port}/v2")
        out.print(
            f"data in {settings.data_dir.resolve()}; {api_processes} API and {workers} worker "
            "process(es)"
        )
        if first_key is not None:
            out.print(f"API key (shown once, kept in {settings.data_dir / 'api-key'}):")
            out.print(first_key, soft_wrap=True)
        uvicorn.run(
            "reelforge.runtime:api_from_environment",
            factory=True,
            workers=api_processes,
            log_level="info",
            # reelforge logs each request (``api.observe``); uvicorn's line would add the
            # query, where a signed link carries its signature
            access_log=False,
            **json_logs,  # type: ignore[arg-type]
            **uvicorn_options(settings),
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,  # live streams would hold a stop
        )
    except SystemExit:
        if supervision.failure is None and upstream.failure is None:
            raise
    finally:
        stop_job_metrics()
        upstream.close(timeout=settings.drain_seconds + 5)
        supervision.close(timeout=settings.drain_seconds + 5)
    failure = supervision.failure or upstream.failure
    if failure is not None:
        _refuse(f"{failure}; stopping")


def _metrics_folder(data_dir: Path) -> None:
    """Turn on multiprocess metrics (``reelforge.metrics``) for this process and those it
    starts: ``PROMETHEUS_MULTIPROC_DIR`` is ``<data dir>/metrics``, emptied (the values of a
    previous run's processes are gone), unless the operator set it."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        return
    folder = data_dir / "metrics"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)


def _prepare_serve(settings: Settings) -> str | None:
    """The start checks of ``serve`` (``_refuse`` on failure); the first key, if made now."""
    from reelforge.runtime import open_store
    from reelforge.startup import StartRefused, check_storage, ensure_key

    store = open_store(settings)
    try:
        check_storage(settings, store)  # first: a refused start makes no key
        first_key = ensure_key(settings, store)
    except StartRefused as exc:
        _refuse(str(exc))
    finally:
        store.close()
    return first_key


def _refuse(message: str) -> NoReturn:
    """Say on one line why reelforge stops, and exit 1."""
    err.print(f"error: {message}", soft_wrap=True, markup=False, highlight=False)
    raise typer.Exit(1)


def _exit_on_signal(signum: int, _: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@app.command()
def worker(
    processes: Annotated[int, typer.Option(min=1, help="Worker processes to run.")] = 1,
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, help="Jobs at once per process [REELFORGE_WORKER_CONCURRENCY]."),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model", help="Serve only this model id (repeatable) [REELFORGE_WORKER_MODELS]."
        ),
    ] = None,
    upstream: Annotated[
        bool,
        typer.Option(
            "--upstream",
            help="Run the hosted models' jobs, many at once [REELFORGE_UPSTREAM_CONCURRENCY].",
        ),
    ] = False,
) -> None:
    """Run workers alone, against the data directory or database of a 'reelforge serve'
    (--processes above 1: supervised, restarted when they die)."""
    from reelforge.runtime import run_worker
    from reelforge.startup import StartRefused
    from reelforge.supervise import CrashLoop, Supervisor

    settings = _settings()
    overrides: dict[str, object] = {}
    if concurrency is not None:
        overrides["worker_concurrency"] = concurrency
    if model:
        overrides["worker_models"] = model
    try:
        settings = Settings.model_validate({**settings.model_dump(), **overrides})
    except ValidationError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    if processes == 1:
        try:
            run_worker(settings, upstream=upstream)
        except StartRefused as exc:
            _refuse(str(exc))
        return
    from reelforge.logs import configure_logging

    configure_logging(settings.log_format)
    signal.signal(signal.SIGTERM, _exit_on_signal)  # through the ``finally``: children drain
    supervisor = Supervisor(settings, processes, upstream=upstream)
    try:
        supervisor.run(threading.Event())
    except CrashLoop as exc:
        _refuse(f"{exc}; stopping")
    finally:
        supervisor.close(timeout=settings.drain_seconds + 5)


db = typer.Typer(
    help="The shared PostgreSQL database.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(db, name="db")


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply pending schema migrations to REELFORGE_DATABASE_URL (safe to run concurrently)."""
    settings = _settings()
    if settings.database_url is None:
        err.print("[red]error:[/red] set REELFORGE_DATABASE_URL (SQLite needs no migrations)")
        raise typer.Exit(2)
    from reelforge.jobs.migrate import upgrade

    applied = upgrade(settings.database_url.get_secret_value())
    out.print(f"applied migrations {applied}" if applied else "the schema is up to date")


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="What to show; camera commands in [brackets].")],
    image: Annotated[Path | None, typer.Option("--image", help="First frame (JPG/PNG).")] = None,
    last_image: Annotated[
        Path | None, typer.Option("--last-image", help="Last frame (JPG/PNG).")
    ] = None,
    duration: Annotated[int, typer.Option(help="Length in seconds: 6 or 10.")] = 6,
    resolution: Annotated[Resolution, typer.Option(help="768P or 1080P.")] = Resolution.P768,
    model: Annotated[str, typer.Option(help="Model id.")] = DEFAULT_MODEL,
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to save the MP4.")] = Path(
        "out.mp4"
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print the final generation.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the video.")] = 1200.0,
    force: client_cli.ForceOption = False,
    base_url: client_cli.BaseUrl = None,
    api_key: client_cli.ApiKeyOption = None,
) -> None:
    """Generate a video through a reelforge server (or the reference service) and save it.

    Exit codes: 0 done, 1 generation failed, 2 usage error (or the output file exists),
    3 timeout, 4 server unreachable.
    """
    client_cli.generate(
        _settings(),
        prompt,
        image,
        last_image,
        duration,
        resolution,
        model,
        output,
        as_json,
        timeout,
        force,
        base_url,
        api_key,
    )


@app.command()
def status(
    generation_id: Annotated[str, typer.Argument(help="The generation's id.")],
    base_url: client_cli.BaseUrl = None,
    api_key: client_cli.ApiKeyOption = None,
) -> None:
    """Print a generation as JSON. Exit code 5: no generation of that id for this key."""
    client_cli.status(_settings(), generation_id, base_url, api_key)


@app.command()
def cancel(
    generation_id: Annotated[str, typer.Argument(help="The generation's id.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the generation as the server then has it.")
    ] = False,
    base_url: client_cli.BaseUrl = None,
    api_key: client_cli.ApiKeyOption = None,
) -> None:
    """Cancel a generation: queued ones end at once, running ones at their next step.

    Says which happened, or that it had already ended (exit code 0 in each case);
    exit code 5: no generation of that id for this key.
    """
    client_cli.cancel(_settings(), generation_id, as_json, base_url, api_key)


@app.command()
def download(
    generation_id: Annotated[str, typer.Argument(help="The generation's id.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to save the MP4.")] = Path(
        "out.mp4"
    ),
    force: client_cli.ForceOption = False,
    base_url: client_cli.BaseUrl = None,
    api_key: client_cli.ApiKeyOption = None,
) -> None:
    """Save a completed generation's video.

    Exit codes: 1 the generation failed, 2 no video yet (or the output file exists),
    5 no generation of that id for this key.
    """
    client_cli.download(_settings(), generation_id, output, force, base_url, api_key)


@app.command("list")
def list_generations(
    limit: Annotated[
        int | None,
        typer.Option(min=1, max=100, help="How many to show, newest first: 1 to 100 (20)."),
    ] = None,
    everything: Annotated[bool, typer.Option("--all", help="Show every generation.")] = False,
    after: Annotated[
        str | None, typer.Option(help="Start below this generation id (the next page).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print {data, has_more, last_id} as JSON.")
    ] = False,
    base_url: client_cli.BaseUrl = None,
    api_key: client_cli.ApiKeyOption = None,
) -> None:
    """List this key's generations, newest first, as a table."""
    client_cli.list_generations(_settings(), limit, everything, after, as_json, base_url, api_key)


@app.command()
def delete(
    generation_id: Annotated[str, typer.Argument(help="The generation's id.")],
    base_url: client_cli.BaseUrl = None,
    api_key: client_cli.ApiKeyOption = None,
) -> None:
    """Delete a generation with its video and inputs, cancelling it first if it runs.

    Exit code 5: no generation of that id for this key.
    """
    client_cli.delete(_settings(), generation_id, base_url, api_key)


keys = typer.Typer(
    help="Manage API keys (stored hashed).", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(keys, name="keys")


PriorityOption = Annotated[
    Priority | None,
    typer.Option(
        help="The key's turn in the queue: every queued job of a higher priority's keys "
        "starts before a lower one's; keys of one priority take turns."
    ),
]
Rpm = Annotated[int | None, typer.Option(min=1, help="Creates per minute.")]
MaxQueued = Annotated[int | None, typer.Option(min=1, help="Jobs queued at once.")]
MaxRunning = Annotated[int | None, typer.Option(min=1, help="Jobs running at once.")]
DailyVideoSeconds = Annotated[
    int | None, typer.Option(min=1, help="Seconds of video per UTC day (counted at start).")
]
"""A key's own limits; one not given is the ``REELFORGE_KEY_*`` default (unset: unlimited)."""


@keys.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A label for the key.")] = "cli",
    priority: PriorityOption = None,
    rpm: Rpm = None,
    max_queued: MaxQueued = None,
    max_running: MaxRunning = None,
    daily_video_seconds: DailyVideoSeconds = None,
    webhook: Annotated[
        str | None, typer.Option(help="Default webhook endpoint of the key's generations.")
    ] = None,
) -> None:
    """Make a key and print it once (stdout); its webhook signing secret goes to stderr."""
    from reelforge.api.auth import new_key, register
    from reelforge.events.webhooks import new_secret
    from reelforge.runtime import open_store

    limits = KeyLimits(rpm, max_queued, max_running, daily_video_seconds)
    url = _webhook_url(webhook)
    with closing(open_store(_settings())) as store:
        key = new_key()
        record = register(
            store, key, name=name, limits=limits, priority=priority or Priority.NORMAL
        )
        store.set_key_webhook(record.id, url=url, secret=new_secret())
        hook = store.key_webhook(record.id, new_secret=new_secret())
    err.print(f"key {record.id} ({name}); it is shown only now:")
    out.print(key, soft_wrap=True)
    if hook is not None:  # on stderr: stdout stays the key alone, for scripts
        err.print(f"its webhook signing secret (reelforge keys webhook-secret): {hook.secret}")


@keys.command("webhook-secret")
def keys_webhook_secret(key_id: Annotated[str, typer.Argument(help="Key id or prefix.")]) -> None:
    """Print the key's webhook signing secret (whsec_...)."""
    from reelforge.events.webhooks import new_secret
    from reelforge.runtime import open_store

    with closing(open_store(_settings())) as store:
        hook = _keyed(lambda: store.key_webhook(key_id, new_secret=new_secret()))
    if hook is None:
        err.print(f"[red]error:[/red] no active key {key_id!r}")
        raise typer.Exit(2)
    out.print(hook.secret, soft_wrap=True)


def _webhook_url(url: str | None) -> str | None:
    """``url`` if it is a webhook URL; exit 2 naming the option otherwise."""
    from reelforge.api.accept import webhook_url

    try:
        return webhook_url(url, "--webhook")
    except InvalidRequest as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


def _keyed(call: Callable[[], T]) -> T:
    """``call()``; exit 2 if the key prefix it was given matches several keys."""
    try:
        return call()
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


webhooks = typer.Typer(help="Webhook deliveries.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(webhooks, name="webhooks")


@webhooks.command("list")
def webhooks_list(
    generation_id: Annotated[
        str | None, typer.Option("--generation-id", help="Only this generation's.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many attempts.")] = 50,
) -> None:
    """List webhook attempts, newest first (every key's; read from the store)."""
    from rich.table import Table

    from reelforge.runtime import open_store

    table = Table("webhook id", "generation", "event", "url", "attempt", "at", "status", "error")
    with closing(open_store(_settings())) as store:
        attempts = store.attempts(owner=None, job_id=generation_id, limit=limit)
    for attempt in attempts:
        status = "" if attempt.status_code is None else str(attempt.status_code)
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(attempt.at))
        table.add_row(
            attempt.webhook_id,
            attempt.job_id,
            attempt.event,
            attempt.url,
            str(attempt.attempt),
            at,
            status,
            attempt.error or "",
        )
    out.print(table)


@keys.command("update")
def keys_update(
    key_id: Annotated[str, typer.Argument(help="Key id or prefix.")],
    rpm: Rpm = None,
    max_queued: MaxQueued = None,
    max_running: MaxRunning = None,
    daily_video_seconds: DailyVideoSeconds = None,
    webhook: Annotated[
        str | None, typer.Option(help="Set the key's default webhook endpoint.")
    ] = None,
    no_webhook: Annotated[
        bool, typer.Option("--no-webhook", help="Remove the key's default webhook endpoint.")
    ] = False,
    priority: PriorityOption = None,
) -> None:
    """Set a key's own limits and priority (those given; the others stay as they are) and its
    default webhook endpoint (--webhook URL or --no-webhook). API processes see a limit's
    change within 2 s; the claim sees a priority's at once."""
    from reelforge.runtime import open_store

    if webhook is not None and no_webhook:
        err.print("[red]error:[/red] give one of --webhook URL and --no-webhook")
        raise typer.Exit(2)
    limits = KeyLimits(rpm, max_queued, max_running, daily_video_seconds)
    url = _webhook_url(webhook)
    with closing(open_store(_settings())) as store:
        found = priority is None or _keyed(lambda: store.set_key_priority(key_id, priority))
        record = _keyed(lambda: store.set_key_limits(key_id, limits)) if found else None
        if record is not None and (webhook is not None or no_webhook):
            _keyed(lambda: store.set_key_webhook(key_id, url=url))
    if record is None:
        err.print(f"[red]error:[/red] no active key {key_id!r}")
        raise typer.Exit(2)
    hook = "" if webhook is None and not no_webhook else f"; webhook {url or 'none'}"
    out.print(
        f"updated {record.id}: {_limits_text(record.limits)}, priority {record.priority}{hook}"
    )


def _limits_text(limits: KeyLimits) -> str:
    """A key's own limits as ``rpm=10 max_queued=5``; ``defaults`` if it has none."""
    own = [f"{name}={value}" for name, value in vars(limits).items() if value is not None]
    return " ".join(own) or "defaults"


@keys.command("list")
def keys_list() -> None:
    """List keys (prefix, name, state); never the keys themselves."""
    from rich.table import Table

    from reelforge.runtime import open_store

    table = Table("id", "prefix", "name", "created", "revoked", "limits", "priority")
    with closing(open_store(_settings())) as store:
        records = store.list_keys()
    for record in records:
        revoked = time.ctime(record.revoked_at) if record.revoked_at else ""
        created = time.ctime(record.created_at)
        limits = _limits_text(record.limits)
        table.add_row(
            record.id, record.prefix, record.name, created, revoked, limits, record.priority
        )
    out.print(table)


@keys.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="Key id or prefix.")]) -> None:
    """Revoke a key: its calls are refused from now on."""
    from reelforge.runtime import open_store

    with closing(open_store(_settings())) as store:
        revoked = store.revoke_key(key_id)
    if not revoked:
        err.print(f"[red]error:[/red] no active key {key_id!r}")
        raise typer.Exit(2)
    out.print(f"revoked {key_id}")


def _keyframes(image: Path | None, last_image: Path | None) -> Keyframes:
    from reelforge.engines.base import Keyframes

    return Keyframes(
        first=_read_image(image, "--image"), last=_read_image(last_image, "--last-image")
    )


def _read_image(path: Path | None, field: str) -> Image.Image | None:
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidRequest(field, f"cannot read {path}: {exc.strerror}") from exc
    from reelforge.media.intake import load_image

    return load_image(data, field=field)
