"""``S3Storage`` against moto's standalone S3 server on a loopback port, through boto3's real
HTTP calls; fake credentials, never real AWS.

moto neither checks signatures nor enforces a presigned URL's expiry, so expiry is checked
as the signed ``X-Amz-Expires``/``X-Amz-Date`` parameters, not by waiting for a refusal.
"""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx
import numpy as np
import pytest
from boto3.exceptions import S3UploadFailedError
from botocore.config import Config
from moto.server import ThreadedMotoServer
from mypy_boto3_s3 import S3Client

from reelforge.media.encoder import EncoderOptions, encode_mp4
from reelforge.storage.base import Storage
from reelforge.storage.s3 import S3Storage
from reelforge.video import Video
from tests.videos import probe

PREFIX = "reelforge/"
TTL = 600


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """The URL of a moto S3 server on an ephemeral loopback port."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(autouse=True)
def fake_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials, and nothing read from the machine's AWS config or metadata."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def bucket() -> str:
    """A fresh bucket name per test (the server lives for the module)."""
    return f"reelforge-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def storage(endpoint: str, bucket: str, tmp_path: Path) -> S3Storage:
    storage = S3Storage(
        bucket=bucket,
        prefix=PREFIX,
        endpoint_url=endpoint,
        url_ttl_seconds=TTL,
        scratch=tmp_path / "scratch",
        create_bucket_if_missing=True,
    )
    storage.check()
    return storage


@pytest.fixture
def s3(endpoint: str) -> S3Client:
    """A plain client, to look at the bucket past the storage."""
    return boto3.client("s3", endpoint_url=endpoint)


def keys(s3: S3Client, bucket: str) -> list[str]:
    return [item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def tiny_mp4(path: Path) -> bytes:
    """Encode eight 64x64 frames to ``path``, as the worker would; the file's bytes."""
    frames = (np.full((64, 64, 3), 30 * n, np.uint8) for n in range(8))
    video = Video(width=64, height=64, fps=8, frame_count=8, frames=frames)
    encode_mp4(video, path, EncoderOptions(preset="ultrafast", crf=18))
    return path.read_bytes()


def test_satisfies_the_storage_protocol(storage: S3Storage) -> None:
    typed: Storage = storage
    assert typed.scratch.is_dir()


def test_same_input_bytes_give_one_key_and_one_upload(
    endpoint: str, bucket: str, tmp_path: Path, s3: S3Client
) -> None:
    client = boto3.client("s3", endpoint_url=endpoint)
    puts: list[str] = []

    def count(params: dict[str, Any], **_: Any) -> None:
        puts.append(params["Key"])

    client.meta.events.register("before-parameter-build.s3.PutObject", count)
    storage = S3Storage(
        bucket=bucket,
        prefix=PREFIX,
        url_ttl_seconds=TTL,
        scratch=tmp_path,
        client=client,
        create_bucket_if_missing=True,
    )
    storage.check()

    first = storage.save_input(b"\x89PNG picture")
    assert storage.save_input(b"\x89PNG picture") == first
    other = storage.save_input(b"\x89PNG another picture")

    assert first.startswith("inputs/")
    assert other != first
    assert puts == [PREFIX + first, PREFIX + other]
    assert storage.load_input(first) == b"\x89PNG picture"
    assert sorted(keys(s3, bucket)) == sorted([PREFIX + first, PREFIX + other])


def test_a_missing_input_is_file_not_found(storage: S3Storage) -> None:
    with pytest.raises(FileNotFoundError, match="inputs/0000"):
        storage.load_input("inputs/0000")


def test_save_video_moves_the_mp4_under_the_prefix(
    storage: S3Storage, s3: S3Client, bucket: str
) -> None:
    source = storage.scratch / "job-1.mp4"
    data = tiny_mp4(source)

    key = storage.save_video("job-1", source)

    assert key == "videos/job-1.mp4"
    assert not source.exists()
    assert keys(s3, bucket) == ["reelforge/videos/job-1.mp4"]
    head = s3.head_object(Bucket=bucket, Key="reelforge/videos/job-1.mp4")
    assert head["ContentType"] == "video/mp4"
    assert head["ContentLength"] == len(data)


def test_the_presigned_url_serves_the_exact_video(storage: S3Storage, tmp_path: Path) -> None:
    source = storage.scratch / "job-2.mp4"
    data = tiny_mp4(source)
    url = storage.video_url(storage.save_video("job-2", source), base_url="http://api.invalid/")

    response = httpx.get(url)

    assert response.status_code == 200
    assert response.headers["content-type"] == "video/mp4"
    assert response.content == data
    downloaded = tmp_path / "downloaded.mp4"
    downloaded.write_bytes(response.content)
    clip = probe(downloaded)
    assert (clip.codec, clip.width, clip.height, len(clip.frames)) == ("h264", 64, 64, 8)


def test_the_presigned_url_answers_ranges(storage: S3Storage) -> None:
    """Browsers seek with Range requests."""
    source = storage.scratch / "job-3.mp4"
    data = tiny_mp4(source)
    url = storage.video_url(storage.save_video("job-3", source), base_url="http://api.invalid/")

    response = httpx.get(url, headers={"Range": "bytes=100-199"})

    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes 100-199/{len(data)}"
    assert response.content == data[100:200]


def test_a_large_video_goes_up_in_parts(storage: S3Storage, s3: S3Client, bucket: str) -> None:
    """Above boto3's 8 MiB threshold the upload is multipart, completed in one step."""
    source = storage.scratch / "big.mp4"
    data = os.urandom(9 * 1024 * 1024)
    source.write_bytes(data)

    key = storage.save_video("big", source)

    etag = s3.head_object(Bucket=bucket, Key=PREFIX + key)["ETag"]
    assert etag.strip('"').endswith("-2")  # the ETag of a two-part upload
    assert httpx.get(storage.video_url(key, base_url="")).content == data


def test_the_presigned_url_is_signed_to_expire(storage: S3Storage, endpoint: str) -> None:
    source = storage.scratch / "job-4.mp4"
    source.write_bytes(b"not really an mp4")
    before = datetime.now(UTC).replace(microsecond=0)

    url = storage.video_url(storage.save_video("job-4", source), base_url="http://api.invalid/")

    assert url.startswith(f"{endpoint}/{storage.bucket}/reelforge/videos/job-4.mp4?")
    query = {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}
    assert query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert query["X-Amz-Expires"] == str(TTL)
    signed_at = datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert before <= signed_at <= datetime.now(UTC)


def test_discard_removes_the_video_and_tolerates_a_missing_one(
    storage: S3Storage, s3: S3Client, bucket: str
) -> None:
    source = storage.scratch / "job-5.mp4"
    source.write_bytes(b"video bytes")
    key = storage.save_video("job-5", source)
    url = storage.video_url(key, base_url="")

    storage.discard(key)
    storage.discard(key)

    assert keys(s3, bucket) == []
    assert httpx.get(url).status_code == 404


def test_a_failed_upload_keeps_the_source_for_the_sweep(
    endpoint: str, bucket: str, tmp_path: Path
) -> None:
    storage = S3Storage(bucket=bucket, endpoint_url=endpoint, url_ttl_seconds=TTL, scratch=tmp_path)
    source = tmp_path / "job-6.mp4"
    source.write_bytes(b"video bytes")

    with pytest.raises(S3UploadFailedError, match="NoSuchBucket"):
        storage.save_video("job-6", source)

    assert source.read_bytes() == b"video bytes"


def test_check_names_a_missing_bucket(endpoint: str, bucket: str, tmp_path: Path) -> None:
    storage = S3Storage(bucket=bucket, endpoint_url=endpoint, url_ttl_seconds=TTL, scratch=tmp_path)

    with pytest.raises(RuntimeError, match=f"'{bucket}' at {re.escape(endpoint)} does not exist"):
        storage.check()


def test_check_creates_a_missing_bucket_when_asked(
    endpoint: str, bucket: str, tmp_path: Path, s3: S3Client
) -> None:
    storage = S3Storage(
        bucket=bucket,
        endpoint_url=endpoint,
        url_ttl_seconds=TTL,
        scratch=tmp_path,
        create_bucket_if_missing=True,
    )
    storage.check()
    storage.check()

    s3.head_bucket(Bucket=bucket)


def test_check_names_an_unreachable_endpoint(tmp_path: Path) -> None:
    with socket.socket() as probe_socket:  # a port that was free a moment ago: nobody listens
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    closed = f"http://127.0.0.1:{port}"
    config = Config(connect_timeout=1, retries={"total_max_attempts": 1, "mode": "standard"})
    client = boto3.client("s3", endpoint_url=closed, config=config)
    storage = S3Storage(
        bucket="reelforge-away", url_ttl_seconds=TTL, scratch=tmp_path, client=client
    )

    started = time.monotonic()
    message = f"'reelforge-away' at {re.escape(closed)} cannot be reached"
    with pytest.raises(RuntimeError, match=message):
        storage.check()
    assert time.monotonic() - started < 5


def test_check_names_missing_credentials(
    monkeypatch: pytest.MonkeyPatch, endpoint: str, tmp_path: Path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    storage = S3Storage(
        bucket="reelforge-anonymous", endpoint_url=endpoint, url_ttl_seconds=TTL, scratch=tmp_path
    )

    message = f"'reelforge-anonymous' at {re.escape(endpoint)}: no AWS credentials"
    with pytest.raises(RuntimeError, match=message):
        storage.check()


def test_sweep_removes_only_stale_scratch_files(endpoint: str, tmp_path: Path) -> None:
    now = 1_700_000_000.0
    storage = S3Storage(
        bucket="reelforge-sweep",
        endpoint_url=endpoint,
        url_ttl_seconds=TTL,
        scratch=tmp_path / "scratch",
        clock=lambda: now,
    )
    stale, fresh = storage.scratch / "stale.mp4", storage.scratch / "fresh.mp4"
    for path, age in ((stale, 7200), (fresh, 60)):
        path.write_bytes(b"partial")
        os.utime(path, (now - age, now - age))

    assert storage.sweep_scratch(3600) == 1
    assert [path.name for path in storage.scratch.iterdir()] == ["fresh.mp4"]


@pytest.mark.parametrize("prefix", ["reelforge", "/reelforge/"])
def test_a_malformed_prefix_stops_the_start(prefix: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"prefix '{prefix}'"):
        S3Storage(bucket="b", prefix=prefix, url_ttl_seconds=TTL, scratch=tmp_path)


def test_a_lifetime_beyond_seven_days_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="url_ttl_seconds 604801"):
        S3Storage(bucket="b", url_ttl_seconds=7 * 24 * 3600 + 1, scratch=tmp_path)


def test_discard_videos_removes_every_attempt_of_a_job_and_nothing_else(
    storage: S3Storage, s3: S3Client, bucket: str
) -> None:
    for name in ("job-7-aaaa", "job-7-bbbb", "job-70-cccc"):
        source = storage.scratch / f"{name}.mp4"
        source.write_bytes(b"video bytes")
        storage.save_video(name, source)

    assert storage.discard_videos("job-7-") == 2

    assert keys(s3, bucket) == [f"{PREFIX}videos/job-70-cccc.mp4"]
