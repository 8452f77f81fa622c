"""The worker's own cost around a diffusers engine's pipeline call, and how long the model
idles between two jobs while the first one's video is encoded.

Run: ``python bench/engines.py`` (about 70 s on 2 cores). The test suite's
tiny random-weight checkpoints (Wan 2.1 T2V at canvas 64x64, 2 steps; MiniMax-H3 at 64x64,
3 steps) are written to a temp directory, named in a registry file and loaded through
``build_engine`` with ``HF_HUB_OFFLINE=1``; a real ``Worker`` runs their jobs on a real
SQLite store and local storage in that directory. No HTTP: jobs are created and claimed on
the store directly. Every request is 6 s 768P: each encode upscales 96 (Wan, 16 fps) or 144
(H3, 24 fps, plus AAC sound) frames to 1366x768 for libx264.

Two timers are spliced in (this harness's monkeypatching, not the service's code): each
engine's pipeline object is wrapped so that its ``__call__`` is timed, and
``reelforge.worker.encode_mp4`` is replaced by a timed call of the real one. Spans are read
with ``time.perf_counter`` on whichever thread makes the call.

1. Service cost per job, one job at a time (after one warm-up job per engine): from just
   before ``worker.process(lease)`` to the return of ``finish_pending()``, minus the time
   inside the pipeline call and inside ``encode_mp4``. It is the sum of *before* (process →
   pipeline call: heartbeat thread, request, the engine's set-up), *handoff* (pipeline
   return → encoder start: the engine's post-processing, the finisher thread taking the
   video) and *after* (encoder return → ``finish_pending`` returns: heartbeat stop, the
   file's move into storage, the ``complete`` commit). The encode is excluded, so these jobs
   use x264 ``ultrafast`` to keep the run short.
2. Two jobs back to back (claim, process, claim, process, ``finish_pending``) with the
   service's default encoder settings: the model's idle time is job 2's pipeline start minus
   job 1's pipeline end. It is split into *engine* (job 1's pipeline return → ``process``
   returns), *claim* (the claim of job 2) and *start* (``process`` → job 2's pipeline call).
   Job 1's encode, on the finisher thread, is shown on the same clock: it overlaps job 2.
"""

from __future__ import annotations

import importlib
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import reelforge.worker
from reelforge.contract import Status
from reelforge.engines import build_engine
from reelforge.engines.base import Engine
from reelforge.engines.registry import load_registry
from reelforge.jobs.model import Lease
from reelforge.jobs.sqlite import SQLiteJobStore
from reelforge.media.encoder import EncoderOptions, OnEncoded, encode_mp4
from reelforge.request import JobRequest
from reelforge.settings import Settings
from reelforge.storage.local import LocalStorage
from reelforge.video import Video
from reelforge.worker import Worker

MODELS = ("wan-tiny", "h3-tiny")
REQUEST = JobRequest(prompt="A lighthouse at dusk, waves on the rocks")
JOBS = 10
"""Isolated jobs timed per engine, after one warm-up job."""
PAIRS = 3
"""Back-to-back pairs timed per engine."""
COST_PRESET = "ultrafast"
"""x264 preset of the isolated jobs (their encode is not part of the figure)."""
TARGET_COST_MS = 100.0
TARGET_IDLE_MS = 50.0
DEFAULT_ENCODER = EncoderOptions()


@dataclass(frozen=True)
class Span:
    kind: str
    """``pipeline`` or ``encode``."""
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


class Spans:
    """Spans of the timed calls, recorded from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: list[Span] = []

    @contextmanager
    def timing(self, kind: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            end = time.perf_counter()
            with self._lock:
                self._spans.append(Span(kind, start, end))

    def take(self, kinds: list[str]) -> list[Span]:
        """The spans recorded since the last ``take``, in start order, which must be of
        ``kinds`` in that order."""
        with self._lock:
            spans, self._spans = self._spans, []
        spans.sort(key=lambda span: span.start)
        if [span.kind for span in spans] != kinds:
            raise RuntimeError(f"expected calls {kinds}, got {spans}")
        return spans


SPANS = Spans()


class TimedPipeline:
    """Stands in for an engine's pipeline: each call is timed, attributes are forwarded."""

    def __init__(self, pipeline: Any) -> None:
        self._pipeline = pipeline

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with SPANS.timing("pipeline"):
            return self._pipeline(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipeline, name)


def timed_encode_mp4(
    video: Video,
    path: Path,
    options: EncoderOptions = DEFAULT_ENCODER,
    on_encoded: OnEncoded | None = None,
) -> None:
    """``encode_mp4``, timed: the worker's module calls this instead (see ``main``)."""
    with SPANS.timing("encode"):
        encode_mp4(video, path, options, on_encoded)


@dataclass(frozen=True)
class JobCost:
    """One isolated job, in seconds."""

    wall: float
    pipeline: float
    encode: float
    before: float
    handoff: float
    after: float

    @property
    def cost(self) -> float:
        return self.wall - self.pipeline - self.encode


@dataclass(frozen=True)
class Pair:
    """Two jobs back to back; times in seconds from job 1's pipeline return."""

    engine: float
    claim: float
    start: float
    encode_1: tuple[float, float]
    pipeline_2: tuple[float, float]

    @property
    def idle(self) -> float:
        return self.pipeline_2[0]


class Bench:
    """Jobs of the loaded engines through real workers on one store and storage."""

    def __init__(self, root: Path, engines: dict[str, Engine]) -> None:
        data = root / "data"
        self.storage = LocalStorage(data, secret=b"b" * 32, url_ttl_seconds=60)
        self.default = Settings(data_dir=data)
        self.store = SQLiteJobStore(self.default.database_path)
        cheap = Settings(data_dir=data, x264_preset=COST_PRESET)
        self.cost_worker = Worker(cheap, self.store, self.storage, engines)
        self.pair_worker = Worker(self.default, self.store, self.storage, engines)
        self.halt = threading.Event()

    def close(self) -> None:
        self.store.close()

    def one_job(self, model: str) -> JobCost:
        worker = self.cost_worker
        job_id = self._queue(model)
        lease = self._claim(worker, model)
        SPANS.take([])
        start = time.perf_counter()
        worker.process(lease, self.halt)
        worker.finish_pending()
        end = time.perf_counter()
        self._check_completed([job_id])
        pipeline, encode = SPANS.take(["pipeline", "encode"])
        return JobCost(
            wall=end - start,
            pipeline=pipeline.seconds,
            encode=encode.seconds,
            before=pipeline.start - start,
            handoff=encode.start - pipeline.end,
            after=end - encode.end,
        )

    def back_to_back(self, model: str) -> Pair:
        worker = self.pair_worker
        job_ids = [self._queue(model), self._queue(model)]
        SPANS.take([])
        worker.process(self._claim(worker, model), self.halt)
        returned = time.perf_counter()
        lease = self._claim(worker, model)
        claimed = time.perf_counter()
        worker.process(lease, self.halt)
        worker.finish_pending()
        self._check_completed(job_ids)
        spans = SPANS.take(["pipeline", "encode", "pipeline", "encode"])
        pipeline_1, encode_1, pipeline_2 = spans[0], spans[1], spans[2]
        zero = pipeline_1.end
        return Pair(
            engine=returned - zero,
            claim=claimed - returned,
            start=pipeline_2.start - claimed,
            encode_1=(encode_1.start - zero, encode_1.end - zero),
            pipeline_2=(pipeline_2.start - zero, pipeline_2.end - zero),
        )

    def _queue(self, model: str) -> str:
        return self.store.create(owner="bench", model=model, request=REQUEST, max_attempts=1).id

    def _claim(self, worker: Worker, model: str) -> Lease:
        lease = self.store.claim(
            worker_id=worker.worker_id, lease_seconds=worker.settings.lease_seconds, models=[model]
        )
        if lease is None:
            raise RuntimeError(f"no queued {model} job to claim")
        return lease

    def _check_completed(self, job_ids: list[str]) -> None:
        for job_id in job_ids:
            job = self.store.get(job_id)
            if job is None or job.status is not Status.COMPLETED:
                state = None if job is None else (job.status, job.error_name, job.error_message)
                raise RuntimeError(f"job {job_id} did not complete: {state}")


@contextmanager
def quiet_loading() -> Iterator[None]:
    """Silence the expected noise of building and loading the tiny checkpoints: without
    torchvision, transformers falls back to PIL image processors and H3's Qwen3VLProcessor
    does not load (the engine stands its own keyframe processor in); H3's audio VAE warns
    of ``weight_norm``."""
    names = ("diffusers", "transformers")
    for name in names:
        importlib.import_module(name)  # which sets its logger's level when first imported
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def load_engines(root: Path) -> dict[str, Engine]:
    """Build the tiny checkpoints, name them in a registry, load them as a worker does, and
    time their pipelines' calls."""
    with quiet_loading():
        return _load_engines(root)


def _load_engines(root: Path) -> dict[str, Engine]:
    import diffusers
    from tests.tiny_h3 import build_tiny_h3
    from tests.tiny_models import save_wan_t2v
    from tests.tiny_registry import TEXT_ONLY, tiny_entry

    from reelforge.engines.minimax_h3 import MiniMaxH3Engine
    from reelforge.engines.wan import WanEngine

    diffusers.utils.logging.disable_progress_bar()
    registry = root / "models.toml"
    wan, h3 = save_wan_t2v(root / "wan"), build_tiny_h3(root / "h3")
    registry.write_text(
        tiny_entry("wan-tiny", "wan", str(wan), 2, *TEXT_ONLY)
        + tiny_entry("h3-tiny", "minimax_h3", str(h3), 3)
    )
    specs = load_registry(registry)
    engines: dict[str, Engine] = {}
    for model in MODELS:
        engine = build_engine(specs[model])
        engine.load()
        if not isinstance(engine, WanEngine | MiniMaxH3Engine):
            raise TypeError(f"{model}: unexpected engine {type(engine).__name__}")
        engine.pipeline = TimedPipeline(engine.pipeline)
        engines[model] = engine
    return engines


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def verdict(value_s: float, target_ms: float) -> str:
    return "met" if value_s * 1000 < target_ms else "NOT met"


def print_costs(model: str, costs: list[JobCost]) -> None:
    columns: list[Callable[[JobCost], float]] = [
        lambda c: c.wall,
        lambda c: c.pipeline,
        lambda c: c.encode,
        lambda c: c.cost,
        lambda c: c.before,
        lambda c: c.handoff,
        lambda c: c.after,
    ]
    for label, pick in (("p50", statistics.median), ("max", max)):
        values = [ms(pick([column(cost) for cost in costs])) for column in columns]
        wall, pipeline, encode, cost, before, handoff, after = values
        print(
            f"  {model:9} {label:4} {wall:>8} {pipeline:>9} {encode:>8} {cost:>6} "
            f"{before:>7} {handoff:>8} {after:>6}"
        )


def print_pair(model: str, index: int, pair: Pair) -> None:
    encode, pipeline = pair.encode_1, pair.pipeline_2
    print(
        f"  {model:9} {index:>4} {ms(pair.idle):>6} {ms(pair.engine):>7} {ms(pair.claim):>6} "
        f"{ms(pair.start):>6}   {encode[1] - encode[0]:5.2f} s "
        f"({encode[0]:+.3f} to {encode[1]:+.3f} s)   {pipeline[0]:+.3f} to {pipeline[1]:+.3f} s"
    )


def run(bench: Bench, loaded: float) -> None:
    default = bench.default
    print(
        f"tiny checkpoints built and loaded in {loaded:.1f} s; every request 6 s 768P; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start"
    )
    costs: dict[str, list[JobCost]] = {}
    pairs: dict[str, list[Pair]] = {}
    for model in MODELS:
        bench.one_job(model)  # warm-up
        costs[model] = [bench.one_job(model) for _ in range(JOBS)]
        pairs[model] = [bench.back_to_back(model) for _ in range(PAIRS)]

    print(
        f"\n1. service cost per job = wall - pipeline - encode = before + handoff + after; "
        f"{JOBS} isolated jobs per engine after a warm-up, x264 {COST_PRESET} (ms)"
    )
    print(
        f"  {'model':9} {'':4} {'wall':>8} {'pipeline':>9} {'encode':>8} {'cost':>6} "
        f"{'before':>7} {'handoff':>8} {'after':>6}"
    )
    for model in MODELS:
        print_costs(model, costs[model])

    print(
        f"\n2. back to back, x264 {default.x264_preset} crf {default.x264_crf}: model idle = "
        "job 2 pipeline start - job 1 pipeline end = engine + claim + start (ms); times from "
        "job 1's pipeline end"
    )
    print(
        f"  {'model':9} {'pair':>4} {'idle':>6} {'engine':>7} {'claim':>6} {'start':>6}   "
        f"{'job 1 encode (on the finisher)':32}   job 2 pipeline"
    )
    for model in MODELS:
        for index, pair in enumerate(pairs[model], 1):
            print_pair(model, index, pair)

    print(f"\n  {'model':9} {'figure':34} {'value':>17} {'target':>9}  result")
    for model in MODELS:
        cost = [c.cost for c in costs[model]]
        idle = max(pair.idle for pair in pairs[model])
        encode = min(pair.encode_1[1] - pair.encode_1[0] for pair in pairs[model])
        # Overlapped: every job 2 started on the model while job 1 was still being encoded.
        overlapped = all(pair.pipeline_2[0] < pair.encode_1[1] for pair in pairs[model])
        result = verdict(idle, TARGET_IDLE_MS) if overlapped else "NOT met (not overlapped)"
        value = f"{ms(statistics.median(cost))} / {ms(max(cost))} ms"
        print(
            f"  {model:9} {'service cost per job, p50 / max':34} {value:>17} "
            f"{f'< {TARGET_COST_MS:.0f} ms':>9}  {verdict(max(cost), TARGET_COST_MS)}"
        )
        print(
            f"  {model:9} {'model idle between two jobs, max':34} {ms(idle) + ' ms':>17} "
            f"{f'< {TARGET_IDLE_MS:.0f} ms':>9}  {result} "
            f"(job 2 started during job 1's encode, >= {encode:.2f} s)"
        )


def main() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo: tests' builders
    with quiet_loading():
        from tests.tiny_models import offline_hub

    reelforge.worker.encode_mp4 = timed_encode_mp4  # type: ignore[attr-defined]  # the timer
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="reelforge-engines-") as directory, offline_hub():
        root = Path(directory)
        engines = load_engines(root)
        bench = Bench(root, engines)
        try:
            run(bench, time.perf_counter() - started)
        finally:
            bench.close()
    print(f"\ntotal {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
