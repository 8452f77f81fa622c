"""MiniMax's native video API on a live server: a client written from MiniMax's documents
(create → query until ``Success`` → retrieve → download) gets a real MP4, and MiniMax's error
codes; its tasks are the other dialects' generations."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import requests

from reelforge.api.auth import hash_key, new_key, register
from reelforge.api.dialects.minimax import render_error, task_status
from reelforge.contract import Status
from reelforge.engines.base import Keyframes
from reelforge.engines.preview import PreviewEngine
from reelforge.jobs.model import Phase
from reelforge.media.watermark import make_mark
from reelforge.request import JobRequest, Resolution
from reelforge.video import Frame
from tests.events.receiver import receiving
from tests.service import LEGACY, TEST_KEY, Api, running_api, service_settings

TASKS = ("Queueing", "Preparing", "Processing", "Success", "Fail")


class MiniMaxError(Exception):
    """The API answered with a non-zero ``base_resp.status_code``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class MiniMax:
    """A MiniMax video client as their guide writes one (requests, Bearer key, poll the
    query every ``poll_seconds``: MiniMax suggests 10, the tests 0.1)."""

    def __init__(self, base_url: str, api_key: str, poll_seconds: float = 10.0) -> None:
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.poll_seconds = poll_seconds
        self.seen: list[str] = []

    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = requests.request(
            method, self.base_url + path, headers=self.headers, timeout=30, **kwargs
        )
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        if answer["base_resp"]["status_code"] != 0:
            raise MiniMaxError(
                answer["base_resp"]["status_code"], answer["base_resp"]["status_msg"]
            )
        return answer

    def create(self, **body: Any) -> str:
        task_id: str = self.call("POST", "/v1/video_generation", json=body)["task_id"]
        return task_id

    def query(self, task_id: str) -> dict[str, Any]:
        return self.call("GET", "/v1/query/video_generation", params={"task_id": task_id})

    def wait(self, task_id: str, timeout: float) -> dict[str, Any]:
        """Query until ``Success`` (its answer) or ``Fail`` (``AssertionError``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = self.query(task_id)
            self.seen.append(answer["status"])
            if answer["status"] == "Success":
                return answer
            assert answer["status"] != "Fail", answer
            time.sleep(self.poll_seconds)
        raise AssertionError(f"task {task_id} did not succeed within {timeout} s")

    def retrieve(self, file_id: str) -> dict[str, Any]:
        file: dict[str, Any] = self.call("GET", "/v1/files/retrieve", params={"file_id": file_id})[
            "file"
        ]
        return file

    def download(self, file: dict[str, Any], path: Path) -> Path:
        response = requests.get(file["download_url"], timeout=30)
        response.raise_for_status()
        path.write_bytes(response.content)
        return path


@pytest.fixture(scope="module")
def shared_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One API without a worker for the tests whose tasks stay queued."""
    settings = service_settings(tmp_path_factory.mktemp("minimax"), webhook_allow_private=True)
    with running_api(settings) as live:
        yield live


def client(api: Api, key: str = TEST_KEY) -> MiniMax:
    return MiniMax(api.base_url, key, poll_seconds=0.1)


def refusal(api: Api, method: str, path: str, **kwargs: Any) -> tuple[int, int, str]:
    """The HTTP status, ``base_resp.status_code`` and ``status_msg`` of a call."""
    response = requests.request(method, api.base_url + path, timeout=30, **kwargs)
    base = response.json()["base_resp"]
    return response.status_code, base["status_code"], base["status_msg"]


# --- the client's whole run --------------------------------------------------------------


def test_a_minimax_client_gets_its_video(service: Api, tmp_path: Path) -> None:
    minimax = client(service)
    task_id = minimax.create(
        model="MiniMax-Hailuo-02", prompt=PROMPT, duration=6, aigc_watermark=True
    )
    done = minimax.wait(task_id, timeout=60)
    assert set(minimax.seen) <= set(TASKS) - {"Fail"}
    assert done == {
        "task_id": task_id,
        "status": "Success",
        "file_id": task_id,
        "video_width": 1366,
        "video_height": 768,
        "base_resp": {"status_code": 0, "status_msg": "success"},
    }
    file = minimax.retrieve(done["file_id"])
    assert (file["file_id"], file["purpose"], file["filename"]) == (
        task_id,
        "video_generation",
        f"{task_id}.mp4",
    )
    assert abs(file["created_at"] - time.time()) < 120
    path = minimax.download(file, tmp_path / file["filename"])
    assert path.stat().st_size == file["bytes"]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.width, stream.height) == ("h264", 1366, 768)
        assert stream.frames == 150
        assert stream.duration is not None
        assert stream.time_base is not None
        assert float(stream.duration * stream.time_base) == pytest.approx(6.0, abs=0.05)
        first = np.asarray(next(container.decode(stream)).to_ndarray(format="rgb24"), np.uint8)
    assert_marked(first)
    # the same generation on the Hailuo dialect
    assert service.get(task_id)["video"]["url"].startswith(service.base_url)


PROMPT = "A lighthouse at dusk [Push in]"


def assert_marked(frame: Frame) -> None:
    """``frame`` is the first of ``PROMPT``'s video with the "AI-generated" mark: the same as
    without it but in the mark's corner."""
    request = JobRequest(prompt=PROMPT, duration_s=6, size=Resolution.P768)
    video = PreviewEngine().generate(request, Keyframes(None, None), lambda done, total: None)
    plain = next(video.frames).astype(np.float64)
    mark = make_mark(video.width, video.height)
    corner = np.zeros(frame.shape[:2], bool)
    corner[mark.top : mark.top + mark.text.shape[0], mark.left : mark.left + mark.text.shape[1]] = (
        True
    )
    difference = np.abs(frame - plain).mean(axis=2)
    assert difference[~corner].mean() < 3  # encoding noise
    assert difference[corner].mean() > 20


# --- the request's fields ----------------------------------------------------------------


def test_the_fields_reach_the_job(shared_api: Api) -> None:
    with receiving() as receiver:  # answers MiniMax's challenge
        receiver.answer = lambda request: (200, request)
        task_id = _create_with_every_field(shared_api, f"{receiver.url}?user=7")
    job = shared_api.store.get(task_id)
    assert job is not None
    assert (job.model, job.dialect, job.callback_url) == (
        "minimax/hailuo-02",
        "minimax",
        f"{receiver.url}?user=7",
    )
    request = job.request
    assert (request.duration_s, request.size, request.seed) == (10, Resolution.P768, 7)
    assert request.prompt_optimizer is False
    assert request.watermark is True
    assert request.first_frame is not None
    assert request.last_frame is not None
    assert (request.first_frame.field, request.last_frame.field) == (
        "first_frame_image",
        "last_frame_image",
    )


def _create_with_every_field(shared_api: Api, callback_url: str) -> str:
    return client(shared_api).create(
        model="MiniMax-Hailuo-02",
        prompt="A harbour [Pan left]",
        prompt_optimizer=False,
        fast_pretreatment=True,
        duration=10,
        resolution="768P",
        first_frame_image="https://images.example.com/first.png",
        last_frame_image="https://images.example.com/last.png",
        callback_url=callback_url,
        aigc_watermark=True,
        seed=7,
    )


def test_a_registry_entry_serves_another_minimax_name(tmp_path: Path) -> None:
    registry = tmp_path / "models.toml"
    registry.write_text('[models."T2V-01"]\nengine = "preview"\n')
    settings = service_settings(tmp_path / "data", models=registry)
    with running_api(settings) as api:
        minimax = client(api)
        task_id = minimax.create(model="T2V-01", prompt="A lighthouse")
        job = api.store.get(task_id)
        assert job is not None
        assert job.model == "T2V-01"
        with pytest.raises(MiniMaxError) as refused:
            minimax.create(model="MiniMax-Hailuo-02", prompt="A lighthouse")
        assert refused.value.code == 2013
        assert refused.value.message.startswith("model: 'minimax/hailuo-02' is not served here")


# --- one store, three dialects -----------------------------------------------------------


def test_tasks_and_generations_are_one_store_each_key_its_own(shared_api: Api) -> None:
    minimax = client(shared_api)
    made_on_hailuo = shared_api.create({"model": "minimax/hailuo-02", "prompt": "x"}).json()
    generation_id = made_on_hailuo["generation_id"]
    assert minimax.query(generation_id)["status"] == "Queueing"
    task_id = minimax.create(model="MiniMax-Hailuo-02", prompt="y")
    assert shared_api.get(task_id)["status"] == "queued"

    other_key = new_key()
    register(shared_api.store, other_key, name="tenant B")
    theirs = client(shared_api, other_key)
    for hidden in (task_id, generation_id):
        with pytest.raises(MiniMaxError) as refused:
            theirs.query(hidden)
        assert (refused.value.code, refused.value.message) == (2013, f"task_id: no task {hidden!r}")
    assert (
        theirs.query(theirs.create(model="MiniMax-Hailuo-02", prompt="z"))["status"] == "Queueing"
    )


def test_a_failed_task_is_fail_with_its_error_and_no_file(shared_api: Api) -> None:
    minimax = client(shared_api)
    task_id = minimax.create(model="MiniMax-Hailuo-02", prompt="x")
    cancelled = shared_api.client.delete(LEGACY, params={"generation_id": task_id})
    assert cancelled.status_code == 200
    answer = minimax.query(task_id)
    assert answer["status"] == "Fail"
    assert "file_id" not in answer
    assert "video_width" not in answer
    assert answer["error"]["name"] == "Cancelled"
    with pytest.raises(MiniMaxError) as refused:
        minimax.retrieve(task_id)
    assert (refused.value.code, refused.value.message) == (
        2013,
        f"file_id: task {task_id!r} has no file (Fail)",
    )


# --- errors as MiniMax reports them ------------------------------------------------------

BODY = {"model": "MiniMax-Hailuo-02", "prompt": "A lighthouse at dusk"}


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("POST", "/v1/video_generation", {"json": BODY}),
        ("GET", "/v1/query/video_generation", {"params": {"task_id": "x"}}),
        ("GET", "/v1/files/retrieve", {"params": {"file_id": "x"}}),
    ],
    ids=["create", "query", "retrieve"],
)
@pytest.mark.parametrize("authorization", [None, "Bearer rf_not-a-key-anybody-made"])
def test_a_bad_key_is_1004(
    shared_api: Api, method: str, path: str, kwargs: dict[str, Any], authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    status, code, _ = refusal(shared_api, method, path, headers=headers, **kwargs)
    assert (status, code) == (200, 1004)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"duration": 8}, "duration: 8 s is not made at 768P; use 6 or 10 seconds"),
        ({"duration": 10, "resolution": "1080P"}, "duration: 10 s is not made at 1080P; use 6"),
        ({"duration": "6"}, "duration: Input should be a valid integer (got '6')"),
        ({"resolution": "512P"}, "resolution: '512P' is not 768P or 1080P (MiniMax's 512P is"),
        ({"resolution": "720P"}, "resolution: '720P' is not 768P or 1080P"),
        ({"subject_reference": []}, "subject_reference: unknown field; this route takes model,"),
        ({"model": "T2V-01"}, "model: 'T2V-01' is not served here; known: minimax/hailuo-02"),
        ({"callback_url": "ftp://hooks"}, "callback_url: must be an http(s) URL with a host"),
        ({"aigc_watermark": "yes"}, "aigc_watermark: Input should be a valid boolean"),
        ({"first_frame_image": "not an image"}, "first_frame_image: not an http(s) URL"),
        ({"prompt": ""}, "prompt: String should have at least 1 character"),
    ],
)
def test_an_invalid_parameter_is_2013_naming_it(
    shared_api: Api, change: dict[str, Any], message: str
) -> None:
    body = {**BODY, **change}
    before = shared_api.store.counts()
    auth = {"Authorization": f"Bearer {TEST_KEY}"}
    status, code, said = refusal(
        shared_api, "POST", "/v1/video_generation", json=body, headers=auth
    )
    assert (status, code) == (200, 2013)
    assert said.startswith(message), said
    assert shared_api.store.counts() == before


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        ("/v1/query/video_generation", {"task_id": "f" * 32}, f"task_id: no task {'f' * 32!r}"),
        ("/v1/query/video_generation", {}, "task_id: Field required"),
        ("/v1/files/retrieve", {"file_id": "f" * 32}, f"file_id: no file {'f' * 32!r}"),
    ],
)
def test_an_unknown_task_or_file_is_2013(
    shared_api: Api, path: str, params: dict[str, str], message: str
) -> None:
    auth = {"Authorization": f"Bearer {TEST_KEY}"}
    assert refusal(shared_api, "GET", path, params=params, headers=auth) == (200, 2013, message)


def test_the_file_of_a_task_still_queued_is_2013(shared_api: Api) -> None:
    minimax = client(shared_api)
    task_id = minimax.create(**BODY)
    assert "file_id" not in minimax.query(task_id)
    with pytest.raises(MiniMaxError) as refused:
        minimax.retrieve(task_id)
    assert refused.value.message == f"file_id: task {task_id!r} has no file (Queueing)"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/query/image_generation", 404),
        ("GET", "/v1/files/list", 404),
        ("POST", "/v1/video_generations", 404),
        ("GET", "/v1/video_generation", 405),
    ],
)
def test_a_route_that_does_not_exist_keeps_its_status(
    shared_api: Api, method: str, path: str, status: int
) -> None:
    auth = {"Authorization": f"Bearer {TEST_KEY}"}
    assert refusal(shared_api, method, path, headers=auth)[:2] == (status, 1000)


# --- the mapping -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "phase", "task"),
    [
        (Status.QUEUED, None, "Queueing"),
        (Status.GENERATING, None, "Preparing"),
        (Status.GENERATING, Phase.PREPARING, "Preparing"),
        (Status.GENERATING, Phase.OPTIMIZING, "Preparing"),
        (Status.GENERATING, Phase.GENERATING, "Processing"),
        (Status.GENERATING, Phase.ENCODING, "Processing"),
        (Status.GENERATING, Phase.STORING, "Processing"),
        (Status.COMPLETED, None, "Success"),
        (Status.ERROR, None, "Fail"),
    ],
)
def test_each_state_has_its_minimax_name(
    shared_api: Api, status: Status, phase: Phase | None, task: str
) -> None:
    key = shared_api.store.key_for_hash(hash_key(TEST_KEY))
    assert key is not None
    job = shared_api.store.create(
        owner=key.id,
        model="minimax/hailuo-02",
        request=JobRequest(prompt="x"),
        max_attempts=3,
    )
    assert task_status(replace(job, status=status, phase=phase)) == task


@pytest.mark.parametrize(
    ("status", "name", "code"),
    [(429, "RateLimited", 1002), (500, "InternalError", 1000), (400, "HTTPError", 2013)],
)
def test_other_errors_are_answered_with_200_and_their_code(
    status: int, name: str, code: int
) -> None:
    answer = render_error(status, name, "what happened")
    assert answer.status_code == 200
    assert answer.body == (b'{"base_resp":{"status_code":%d,"status_msg":"what happened"}}' % code)
