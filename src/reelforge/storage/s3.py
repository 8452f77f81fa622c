"""Videos and input images in an S3 bucket (AWS or any S3-compatible service), served through
presigned, expiring URLs.

Credentials come from boto3's default chain (environment, config files, instance roles).
Objects appear whole or not at all: a PUT, or a multipart upload's completion, is atomic on
S3, so a partial video is never served. A worker killed mid-upload can leave an unfinished
multipart upload behind (invisible, but billed): give the bucket a lifecycle rule that
aborts incomplete multipart uploads after a day.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from reelforge.storage.base import sweep_directory

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.literals import BucketLocationConstraintType
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

MAX_URL_TTL_SECONDS = 7 * 24 * 3600
"""The longest lifetime S3 allows a presigned (SigV4) URL."""

CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 60.0
MAX_ATTEMPTS = 3
"""Tries per request, the first included (botocore's "standard" retries, with backoff)."""


class S3Storage:
    """Objects under ``prefix`` in ``bucket``: ``inputs/<sha256>`` for images,
    ``videos/<name>.mp4`` for videos. Callers see these logical keys; the prefix is applied
    here."""

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        url_ttl_seconds: int,
        scratch: Path,
        client: S3Client | None = None,
        create_bucket_if_missing: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``endpoint_url`` selects an S3-compatible service (MinIO, moto), addressed
        path-style; ``client`` replaces the one built from these settings; ``scratch`` is a
        local directory (created) for files being written; ``create_bucket_if_missing`` is
        for tests and development, used by ``check``; ``clock`` (epoch seconds) ages scratch
        files."""
        if prefix.startswith("/") or (prefix and not prefix.endswith("/")):
            raise ValueError(
                f"S3 prefix {prefix!r} must be empty or like 'reelforge/': ending in '/', "
                "not starting with it"
            )
        if not 1 <= url_ttl_seconds <= MAX_URL_TTL_SECONDS:
            raise ValueError(
                f"url_ttl_seconds {url_ttl_seconds} is outside what S3 presigns: "
                f"1 to {MAX_URL_TTL_SECONDS}"
            )
        self.bucket = bucket
        self.prefix = prefix
        self._ttl = url_ttl_seconds
        self._scratch = scratch
        self._create_bucket = create_bucket_if_missing
        self._clock = clock
        self._client = client or _client(endpoint_url, region)
        scratch.mkdir(parents=True, exist_ok=True)

    @property
    def scratch(self) -> Path:
        """The local directory for files about to be uploaded."""
        return self._scratch

    def check(self) -> None:
        """Make sure the bucket can be reached (creating it if so configured); a
        ``RuntimeError`` naming the bucket and the endpoint if not. Call it at start."""
        where = f"S3 bucket {self.bucket!r} at {self._client.meta.endpoint_url}"
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            status = _status(exc)
            if status == 404 and self._create_bucket:
                self._create()
            elif status == 404:
                raise RuntimeError(f"{where} does not exist; create it or fix the name") from exc
            elif status == 403:
                raise RuntimeError(
                    f"{where} refused access (HTTP 403); check the credentials and bucket policy"
                ) from exc
            else:
                raise RuntimeError(f"{where} is not usable: {exc}") from exc
        except NoCredentialsError as exc:
            raise RuntimeError(
                f"{where}: no AWS credentials (environment, config files or instance role)"
            ) from exc
        except BotoCoreError as exc:
            raise RuntimeError(f"{where} cannot be reached: {exc}") from exc

    def sweep_scratch(self, max_age_seconds: float) -> int:
        """Remove scratch files untouched for ``max_age_seconds`` (left by killed workers;
        a file being written is touched with every frame). Returns how many went."""
        return sweep_directory(self._scratch, self._clock() - max_age_seconds)

    def save_input(self, data: bytes) -> str:
        """Keep an input image; returns its key (the same bytes give the same key and are
        uploaded once)."""
        key = f"inputs/{hashlib.sha256(data).hexdigest()}"
        try:
            self._client.head_object(Bucket=self.bucket, Key=self.prefix + key)
        except ClientError as exc:
            if _status(exc) != 404:
                raise
            self._client.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data)
        return key

    def load_input(self, key: str) -> bytes:
        """The bytes kept under ``key``; ``FileNotFoundError`` if there are none."""
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self.prefix + key)
        except ClientError as exc:
            if _status(exc) == 404:
                raise FileNotFoundError(f"no {key!r} in S3 bucket {self.bucket!r}") from exc
            raise
        return response["Body"].read()

    def save_video(self, name: str, source: Path) -> str:
        """Upload a finished MP4 as ``videos/<name>.mp4`` (multipart when large; visible only
        once complete), then delete ``source``; returns the key. On failure ``source`` stays
        in scratch, for the sweep."""
        key = f"videos/{name}.mp4"
        self._client.upload_file(
            str(source), self.bucket, self.prefix + key, ExtraArgs={"ContentType": "video/mp4"}
        )
        source.unlink()
        return key

    def discard(self, key: str) -> None:
        """Remove a stored object (a result nobody will point to); missing is fine."""
        self._client.delete_object(Bucket=self.bucket, Key=self.prefix + key)

    def discard_videos(self, name_prefix: str) -> int:
        """Remove every ``videos/<name_prefix>*.mp4`` object; how many went."""
        prefix = f"{self.prefix}videos/{name_prefix}"
        removed = 0
        for page in self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            keys: list[ObjectIdentifierTypeDef] = [
                {"Key": item["Key"]} for item in page.get("Contents", [])
            ]
            if keys:
                self._client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})
                removed += len(keys)
        return removed

    def video_url(self, key: str, *, base_url: str) -> str:
        """A presigned GET of ``key``, valid for the configured lifetime; ``base_url`` is
        not used (the bucket serves the file)."""
        return self._client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self.prefix + key},
            ExpiresIn=self._ttl,
        )

    def _create(self) -> None:
        region = self._client.meta.region_name
        try:
            if region in (None, "us-east-1"):  # the one region that refuses a constraint
                self._client.create_bucket(Bucket=self.bucket)
            else:
                self._client.create_bucket(
                    Bucket=self.bucket,
                    CreateBucketConfiguration={
                        "LocationConstraint": cast("BucketLocationConstraintType", region)
                    },
                )
        except self._client.exceptions.BucketAlreadyOwnedByYou:  # another process was first
            pass


def _client(endpoint_url: str | None, region: str | None) -> S3Client:
    """A client with credentials from the default chain, SigV4 presigning, bounded timeouts
    and retries; path-style addressing for a custom endpoint (MinIO serves no bucket
    subdomains)."""
    config = Config(
        signature_version="s3v4",
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
        retries={"total_max_attempts": MAX_ATTEMPTS, "mode": "standard"},
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    # A session per client: boto3's default session is not safe to share across threads.
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)


def _status(exc: ClientError) -> int | None:
    """The HTTP status of a refused request (HEAD answers carry no error code, only this)."""
    return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
