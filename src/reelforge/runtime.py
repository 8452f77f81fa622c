"""Building a process's parts from settings: the store, the storage, keys, worker processes.

Each process calls these once at start and passes the parts down.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event
from types import FrameType
from typing import Final

from fastapi import FastAPI

from reelforge.api.app import Services, create_app
from reelforge.engines import load_engines
from reelforge.engines.registry import ModelSpec, default_registry, is_upstream, load_registry
from reelforge.events.delivery import Deliverer
from reelforge.events.metrics import JobMetrics
from reelforge.jobs.model import Store
from reelforge.jobs.sqlite import SQLiteJobStore
from reelforge.logs import configure_logging
from reelforge.metrics import process_metrics
from reelforge.optimizer import PromptOptimizer
from reelforge.settings import Settings
from reelforge.startup import check_storage, make_data_dir
from reelforge.storage.base import Storage
from reelforge.storage.local import LocalStorage, load_or_create_secret
from reelforge.upstream_worker import UpstreamWorker
from reelforge.worker import Signals, Worker

log = logging.getLogger("reelforge")

EXIT_STUCK: Final = 75
"""A worker process's exit status after a job's step never returned (EX_TEMPFAIL: start a
new one)."""


def open_store(settings: Settings) -> Store:
    """PostgreSQL when ``database_url`` is set (shared by many machines), else SQLite in the
    data directory (one machine)."""
    if settings.database_url is not None:
        try:
            from reelforge.jobs.postgres import PostgresJobStore
        except ImportError as exc:
            raise RuntimeError("PostgreSQL needs: pip install 'reelforge[postgres]'") from exc
        return PostgresJobStore(
            settings.database_url.get_secret_value(), key_max_running=settings.key_max_running
        )
    make_data_dir(settings.data_dir)
    return SQLiteJobStore(settings.database_path, key_max_running=settings.key_max_running)


def open_storage(settings: Settings) -> Storage:
    """An S3 bucket when ``s3_bucket`` is set, else the data directory."""
    if settings.s3_bucket is not None:
        try:
            from reelforge.storage.s3 import S3Storage
        except ImportError as exc:
            raise RuntimeError("S3 storage needs: pip install 'reelforge[s3]'") from exc
        storage = S3Storage(
            bucket=settings.s3_bucket,
            prefix=settings.s3_prefix,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            url_ttl_seconds=settings.url_ttl_seconds,
            scratch=settings.data_dir / "tmp",
        )
        storage.check()
        return storage
    if settings.url_secret is not None:
        secret = settings.url_secret.get_secret_value().encode("utf-8")
    else:
        secret = load_or_create_secret(settings.data_dir / "url-secret")
    return LocalStorage(settings.data_dir, secret=secret, url_ttl_seconds=settings.url_ttl_seconds)


def api_from_environment() -> FastAPI:
    """The API of one of several ``reelforge serve --api-processes N`` processes (uvicorn
    imports this factory in each; settings come from the environment)."""
    settings = Settings()
    configure_logging(settings.log_format)
    store = open_store(settings)
    check_storage(settings, store)
    return create_app(Services(settings, store, open_storage(settings), load_models(settings)))


def start_job_metrics(settings: Settings) -> Callable[[], None]:
    """A thread that counts and logs every job transition of the store (``events.metrics``)
    into this process's metrics, started; the function that stops it."""
    store = open_store(settings)
    counter = JobMetrics(store, process_metrics())
    done = threading.Event()
    thread = threading.Thread(
        target=counter.run, args=(done,), kwargs={"interval": 1.0}, name="reelforge-metrics"
    )
    thread.start()

    def stop() -> None:
        done.set()
        thread.join()
        store.close()

    return stop


def load_models(settings: Settings) -> dict[str, ModelSpec]:
    """The served models: the registry file if set, else the embedded default."""
    return default_registry() if settings.models is None else load_registry(settings.models)


def worker_models(settings: Settings, registry: dict[str, ModelSpec]) -> list[str]:
    """The model ids this worker claims (``worker_models``, default all served)."""
    models = settings.worker_models or sorted(registry)
    unknown = sorted(set(models) - set(registry))
    if unknown:
        raise ValueError(f"worker_models {unknown} are not served; served: {sorted(registry)}")
    return models


def build_workers(
    settings: Settings,
    store: Store,
    storage: Storage,
    *,
    prefix: str,
    on_stuck: Callable[[], None] = lambda: None,
    upstream: bool = False,
) -> list[Worker]:
    """``worker_concurrency`` workers, each with engines of its own: two jobs running at once
    never share one pipeline (a diffusers pipeline is not safe to call from two threads).
    Each job's time limit is its model's ``job_timeout_seconds``, else the settings'; one
    prompt optimizer serves them all.

    Hosted models (``engine = "upstream"``) are only ever claimed by the upstream pool:
    ``upstream`` gives one ``UpstreamWorker`` for them (its ``run_many`` runs
    ``upstream_concurrency`` jobs at once), else the workers take every other model."""
    registry = load_models(settings)
    optimizer = PromptOptimizer.from_settings(settings, registry)
    models = [m for m in worker_models(settings, registry) if is_upstream(registry[m]) == upstream]
    timeouts = {
        model: registry[model].job_timeout_seconds or settings.job_timeout_seconds
        for model in models
    }
    kind = UpstreamWorker if upstream else Worker
    return [
        kind(
            settings,
            store,
            storage,
            load_engines(registry, models, preview_scale=settings.preview_scale),
            worker_id=f"{prefix}:{n}",
            job_timeouts=timeouts,
            on_stuck=on_stuck,
            optimizer=optimizer,
        )
        for n in range(1 if upstream else settings.worker_concurrency)
    ]


def has_upstream(settings: Settings) -> bool:
    """Whether the registry serves a hosted model (``serve`` then starts the upstream pool)."""
    return any(is_upstream(spec) for spec in load_models(settings).values())


def run_worker(
    settings: Settings, *, child: bool = False, ready: Event | None = None, upstream: bool = False
) -> None:
    """A worker process's main: SIGTERM (and SIGINT, unless ``child`` of a parent that
    forwards it) drains it: the running job gets ``drain_seconds`` to finish, then is given
    back uncharged; a second signal gives it back at once. ``ready`` is set once its engines
    are loaded and it claims jobs (its supervisor tells a death at start from a later one).
    ``upstream``: the process runs the hosted models' jobs (``build_workers``)."""
    configure_logging(settings.log_format)
    control = _Control(settings)
    signals, parent = control.signals, os.getppid()

    def on_signal(signum: int, _: FrameType | None) -> None:
        control.drain(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, signal.SIG_IGN if child else on_signal)
    store = open_store(settings)
    check_storage(settings, store)
    store.on_new_work(signals.wake.set)
    prefix = f"{socket.gethostname()}:{os.getpid()}"
    storage = open_storage(settings)
    workers = build_workers(
        settings, store, storage, prefix=prefix, on_stuck=control.recycle, upstream=upstream
    )
    deliverer = Deliverer(settings, store, storage)
    threading.Thread(
        target=deliverer.run, args=(signals.drain,), name="reelforge-webhooks", daemon=True
    ).start()
    threads = [
        threading.Thread(target=worker.run, args=(signals,), name=f"reelforge-worker-{n}")
        if not isinstance(worker, UpstreamWorker)
        else threading.Thread(
            target=worker.run_many, args=(signals, settings.upstream_concurrency), name="upstream"
        )
        for n, worker in enumerate(workers)
    ]
    models = ", ".join(workers[0].engines)
    log.info("worker %s (%d threads) ready for %s", prefix, len(threads), models)
    for thread in threads:
        thread.start()
    if ready is not None:
        ready.set()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.5)  # short joins: the main thread must stay free for signals
                if child and os.getppid() != parent and not signals.drain.is_set():
                    control.drain(f"parent process {parent} is gone")  # nobody will stop us
    finally:
        store.close()
    if control.stuck.is_set():
        raise SystemExit(EXIT_STUCK)


class _Control:
    """How a worker process stops: ``drain`` (no new claims; the running jobs get
    ``drain_seconds``, then are given back; a second drain gives them back at once) and
    ``recycle`` (a job's step never returned: drain, then exit ``EXIT_STUCK``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.signals = Signals()
        self.stuck = threading.Event()

    def drain(self, why: str) -> None:
        if self.signals.drain.is_set():
            self.signals.halt.set()
            return
        log.info("%s: draining", why)
        self.signals.start_draining()
        _later(self.settings.drain_seconds, self.signals.halt.set)

    def recycle(self) -> None:
        """Drain, so that a fresh process (from the supervisor, or systemd) takes this one's
        place; a thread whose step still does not return is left behind by ``os._exit``."""
        self.stuck.set()
        self.drain("a job's step did not return after its time limit")
        _later(self.settings.drain_seconds + 1, lambda: os._exit(EXIT_STUCK))


def _later(seconds: float, action: Callable[[], None]) -> None:
    timer = threading.Timer(seconds, action)
    timer.daemon = True
    timer.start()


def start_workers(settings: Settings, count: int) -> list[BaseProcess]:
    """``count`` worker processes (fresh interpreters: nothing shared but the data dir)."""
    context = multiprocessing.get_context("spawn")
    processes: list[BaseProcess] = [
        context.Process(
            target=run_worker,
            args=(settings,),
            kwargs={"child": True},
            name=f"reelforge-worker-{i}",
        )
        for i in range(count)
    ]
    for process in processes:
        process.start()
    return processes


def stop_workers(processes: list[BaseProcess], timeout: float) -> None:
    """SIGTERM every worker (they drain), then wait up to ``timeout`` seconds, then kill."""
    for process in processes:
        if process.is_alive() and process.pid is not None:
            os.kill(process.pid, signal.SIGTERM)
    for process in processes:
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join()
