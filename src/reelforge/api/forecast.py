"""Where a job stands in its model's queue and when it should be done: the ``queue_position``
and ``eta_seconds`` every dialect's poll carries.

From the store's ``outlook`` of the job's model, read at most once per ``FRESH_SECONDS`` per
model in each API process (the poll is the hottest route; a position may be that old):

- the position is the job's place in the outlook's order (1 = the next its model's workers
  start), an approximation of the fair claim's order (``Coordination.outlook``);
- with ``m`` the model's moving mean of generation seconds and ``w`` its workers, a worker
  frees up when each running job reaches ``m`` seconds (now, if past it), an idle one now;
  the job at position ``p`` starts when the ``p``-th slot frees up, taking the slots in turn
  (``round, slot = divmod(p - 1, w)``: the slot's free time plus ``round * m``), and ends
  ``m`` later; a running job ends ``m`` after it started. ``eta_seconds`` is the time to
  that end, whole seconds rounded up, never negative.

No estimate (None) before the model's first completion or while no worker serves it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, NamedTuple, Protocol

from reelforge.contract import Status
from reelforge.jobs.model import Job, ModelOutlook

FRESH_SECONDS: Final = 1.0
"""How long an API process answers from a model's outlook before reading it again."""
MISSING_REREAD_SECONDS: Final = 0.1
"""A queued job newer than the outlook rereads it at most this often (else it is last)."""


class Forecast(NamedTuple):
    """One job's outlook; every field None where it does not apply or is unknown. (A tuple:
    one is made on every poll of an unfinished job.)"""

    queue_position: int | None
    """1 = the next of its model's queued jobs to start; None unless queued."""
    starts_at: float | None
    """When it should start (epoch seconds); None unless queued with an estimate."""
    ends_at: float | None
    """When it should end (epoch seconds); None unless queued or running with an estimate."""

    def eta_seconds(self, now: float) -> int | None:
        """Whole seconds from ``now`` to the expected end, rounded up; None without one."""
        if self.ends_at is None:
            return None
        return max(0, math.ceil(self.ends_at - now))


NO_FORECAST: Final = Forecast(None, None, None)


class Outlooks(Protocol):
    """Where forecasts come from: ``Coordination.outlook`` of the job store."""

    def outlook(self, model: str, *, within: float) -> ModelOutlook: ...


@dataclass(frozen=True)
class _Reading:
    """A model's outlook as read at ``read_at`` (monotonic seconds), made ready to answer."""

    read_at: float
    positions: dict[str, int]
    generation_seconds: float | None
    free_at: tuple[float, ...]
    """When each of the model's workers frees up, soonest first (epoch seconds)."""


class Forecasts:
    """Forecasts for jobs, from outlooks cached per model. Safe to share between threads
    (a race costs an extra read, never a wrong answer)."""

    def __init__(
        self,
        store: Outlooks,
        *,
        ready_within: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.ready_within = ready_within
        self.monotonic = monotonic
        self._readings: dict[str, _Reading] = {}

    def of(self, job: Job) -> Forecast:
        """``job``'s forecast as of its last read (a terminal job has none)."""
        if job.status is Status.QUEUED:
            return self._queued(job)
        if job.status is not Status.GENERATING:
            return NO_FORECAST
        reading = self._reading(job.model)
        if reading.generation_seconds is None or job.started_at is None:
            return NO_FORECAST
        return Forecast(None, None, job.started_at + reading.generation_seconds)

    def _queued(self, job: Job) -> Forecast:
        reading = self._reading(job.model)
        position = reading.positions.get(job.id)
        if position is None and self.monotonic() - reading.read_at >= MISSING_REREAD_SECONDS:
            reading = self._reading(job.model, force=True)
            position = reading.positions.get(job.id)
        if position is None:  # newer than the reading: behind every job in it
            position = len(reading.positions) + 1
        mean = reading.generation_seconds
        if mean is None or not reading.free_at:
            return Forecast(position, None, None)
        rounds, slot = divmod(position - 1, len(reading.free_at))
        starts_at = reading.free_at[slot] + rounds * mean
        return Forecast(position, starts_at, starts_at + mean)

    def _reading(self, model: str, *, force: bool = False) -> _Reading:
        now = self.monotonic()
        reading = self._readings.get(model)
        if force or reading is None or now - reading.read_at >= FRESH_SECONDS:
            outlook = self.store.outlook(model, within=self.ready_within)
            reading = _ready(outlook, read_at=now)
            self._readings[model] = reading
        return reading


def _ready(outlook: ModelOutlook, *, read_at: float) -> _Reading:
    """``outlook`` made ready to answer: positions by id, and each worker's free time."""
    positions = {job_id: n for n, job_id in enumerate(outlook.order, start=1)}
    mean = outlook.generation_seconds
    free_at: tuple[float, ...] = ()
    if mean is not None and outlook.workers > 0:
        busy = sorted(max(outlook.now, started + mean) for started in outlook.running_since)
        idle = [outlook.now] * max(0, outlook.workers - len(busy))
        free_at = tuple(sorted(idle + busy)[: outlook.workers])
    return _Reading(read_at, positions, mean, free_at)
