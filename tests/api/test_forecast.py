"""Queue position and ETA: the forecast's arithmetic on outlooks made by hand, and every
dialect's poll answering it from a real store behind a real server."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, replace

import httpx

from reelforge.api.auth import register
from reelforge.api.dialects.openai import poll_after_ms
from reelforge.api.forecast import FRESH_SECONDS, Forecasts
from reelforge.client.models import Generation
from reelforge.client_cli import outlook
from reelforge.contract import Status
from reelforge.jobs.model import Completed, Job, ModelOutlook
from reelforge.request import JobRequest
from tests.service import LEGACY, Api

NOW = 1_000_000.0
OTHER_KEY = "rf_forecast-other-tenant-0123456789abcdef"


@dataclass
class Outlooks:
    """One model's outlook, counting reads."""

    current: ModelOutlook
    reads: int = 0

    def outlook(self, model: str, *, within: float) -> ModelOutlook:
        self.reads += 1
        return self.current


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


def a_job(job_id: str, status: Status = Status.QUEUED, started_at: float | None = None) -> Job:
    return Job(
        id=job_id,
        owner="k",
        model="preview",
        request=JobRequest(prompt="p"),
        status=status,
        progress=0,
        attempts=0,
        max_attempts=1,
        lease_token=None,
        lease_expires_at=None,
        worker_id=None,
        error_name=None,
        error_message=None,
        video_key=None,
        credits_used=None,
        meta={},
        created_at=NOW,
        updated_at=NOW,
        started_at=started_at,
        finished_at=None,
    )


def an_outlook(order: tuple[str, ...], **fields: object) -> ModelOutlook:
    base = ModelOutlook(order=order, generation_seconds=20.0, workers=2, running_since=(), now=NOW)
    return replace(base, **fields)  # type: ignore[arg-type]


def test_queued_jobs_take_the_workers_in_turn() -> None:
    source = Outlooks(an_outlook(("a", "b", "c", "d", "e"), running_since=(NOW - 5,)))
    forecasts = Forecasts(source, ready_within=10, monotonic=Clock())
    # one worker is idle (free now), the other frees up at 15 s
    starts = [forecasts.of(a_job(job_id)).starts_at for job_id in "abcde"]
    assert starts == [NOW, NOW + 15, NOW + 20, NOW + 35, NOW + 40]
    third = forecasts.of(a_job("c"))
    assert (third.queue_position, third.ends_at) == (3, NOW + 40)
    assert third.eta_seconds(NOW + 0.5) == 40
    assert third.eta_seconds(NOW + 99) == 0


def test_a_running_job_ends_a_mean_after_it_started() -> None:
    forecasts = Forecasts(Outlooks(an_outlook(())), ready_within=10, monotonic=Clock())
    running = forecasts.of(a_job("r", Status.GENERATING, started_at=NOW - 5))
    assert (running.queue_position, running.eta_seconds(NOW)) == (None, 15)
    assert forecasts.of(a_job("r", Status.COMPLETED, started_at=NOW)).eta_seconds(NOW) is None


def test_without_a_pace_or_a_worker_only_the_position_is_known() -> None:
    for unknown in ({"generation_seconds": None}, {"workers": 0}):
        source = Outlooks(an_outlook(("a", "b"), **unknown))
        forecast = Forecasts(source, ready_within=10, monotonic=Clock()).of(a_job("b"))
        assert (forecast.queue_position, forecast.eta_seconds(NOW)) == (2, None)


def test_the_outlook_is_read_once_a_second_and_again_for_a_newer_job() -> None:
    clock = Clock()
    source = Outlooks(an_outlook(("a",)))
    forecasts = Forecasts(source, ready_within=10, monotonic=clock)
    for _ in range(5):
        forecasts.of(a_job("a"))
    assert source.reads == 1
    assert forecasts.of(a_job("new")).queue_position == 2  # read just now: it is last
    source.current = an_outlook(("new", "a"))
    clock.now += 0.2
    assert forecasts.of(a_job("new")).queue_position == 1
    assert source.reads == 2
    clock.now += FRESH_SECONDS
    forecasts.of(a_job("a"))
    assert source.reads == 3


def test_the_cli_label_says_place_and_time() -> None:
    def label(**body: object) -> str:
        return outlook(Generation.from_wire({"id": "g", **body}))

    assert label(status="queued", queue_position=3, eta_seconds=40) == "queued, 3rd, ~40 s"
    assert label(status="queued", queue_position=11) == "queued, 11th"
    assert label(status="queued", queue_position=22) == "queued, 22nd"
    assert label(status="generating", eta_seconds=7) == "generating, ~7 s"
    assert label(status="completed") == "completed"


# --- on the wire ---------------------------------------------------------------------------


def _create(client: httpx.Client, n: int) -> str:
    answer = client.post(LEGACY, json={"model": "preview", "prompt": f"clip {n}"}).json()
    generation_id: str = answer["generation_id"]
    return generation_id


def test_every_poll_carries_the_fair_position(api: Api) -> None:
    register(api.store, OTHER_KEY, name="other")
    mine = [_create(api.client, n) for n in range(3)]
    with httpx.Client(base_url=api.base_url, headers={"Authorization": f"Bearer {OTHER_KEY}"}) as c:
        theirs = _create(c, 9)
        assert c.get(LEGACY, params={"generation_id": theirs}).json()["queue_position"] == 2
    polls = [api.get(job_id) for job_id in mine]
    assert [poll["queue_position"] for poll in polls] == [1, 3, 4]
    assert [poll["eta_seconds"] for poll in polls] == [None] * 3  # no pace yet
    video = api.client.get(f"/v1/videos/{mine[1]}")
    assert video.json()["queue_position"] == 3
    assert video.headers["openai-poll-after-ms"] == "1000"
    query = api.client.get("/v1/query/video_generation", params={"task_id": mine[2]}).json()
    assert (query["queue_position"], query["eta_seconds"]) == (4, None)


def test_every_poll_carries_the_eta_from_the_pace_and_workers(api: Api) -> None:
    with sqlite3.connect(api.settings.database_path) as db:
        db.execute("INSERT INTO model_pace VALUES ('preview', 20.0, 3, 0)")
    api.store.report_worker("w1", models=["preview"])
    first, second = _create(api.client, 0), _create(api.client, 1)
    hailuo = [api.get(job_id)["eta_seconds"] for job_id in (first, second)]
    assert hailuo[0] in (19, 20)
    assert hailuo[1] in (39, 40)
    video = api.client.get(f"/v1/videos/{second}")
    assert video.json()["eta_seconds"] in (39, 40)
    assert video.headers["openai-poll-after-ms"] == "10000"  # the longest wait offered
    query = api.client.get("/v1/query/video_generation", params={"task_id": first}).json()
    assert query["eta_seconds"] in (19, 20)
    assert api.store.claim(worker_id="w1", lease_seconds=30) is not None
    running = api.get(first)
    assert running["queue_position"] is None
    assert running["eta_seconds"] in (19, 20)


def test_a_finished_generation_has_no_forecast(api: Api) -> None:
    api.store.report_worker("w1", models=["preview"])
    job_id = _create(api.client, 0)
    lease = api.store.claim(worker_id="w1", lease_seconds=30)
    assert lease is not None
    assert api.store.finish(lease, Completed(video_key="x.mp4", credits_used=0.0, meta={}))
    answer = api.get(job_id)
    assert (answer["status"], answer["queue_position"], answer["eta_seconds"]) == (
        "completed",
        None,
        None,
    )
    query = api.client.get("/v1/query/video_generation", params={"task_id": job_id}).json()
    assert "eta_seconds" not in query


def test_the_openai_poll_header_follows_the_eta() -> None:
    queued = a_job("q")
    assert poll_after_ms(queued, now=NOW, eta_seconds=3) == 3000
    assert poll_after_ms(queued, now=NOW, eta_seconds=0) == 250
    assert poll_after_ms(queued, now=NOW, eta_seconds=None) == 1000
