"""Settings, read once per process from ``REELFORGE_*`` environment variables and passed down."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, IPvAnyNetwork, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from reelforge.contract import MAX_IMAGE_BYTES
from reelforge.jobs.model import KeyLimits

X264Preset = Literal[
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"
]

# Two base64 images (4/3 of 20 MB each) plus room for the JSON around them.
_DEFAULT_BODY_LIMIT = 2 * (MAX_IMAGE_BYTES * 4 // 3 + 4) + 1024 * 1024


class Settings(BaseSettings):
    """Every knob of reelforge; invalid values stop the start with a message naming them."""

    model_config = SettingsConfigDict(env_prefix="REELFORGE_", extra="forbid", frozen=True)

    data_dir: Path = Field(Path("reelforge-data"), description="Database, videos and secrets.")
    host: str = Field("127.0.0.1", description="Address `reelforge serve` listens on.")
    port: int = Field(8000, ge=0, le=65535, description="Port `reelforge serve` listens on.")
    api_key: SecretStr | None = Field(
        None, description="A key registered at start (scripts, tests); the CLI client's key."
    )
    base_url: str | None = Field(
        None, description="The API the CLI client talks to; default: the local `serve`."
    )
    database_url: SecretStr | None = Field(
        None, description="postgresql://… for the shared PostgreSQL store; default: SQLite."
    )
    s3_bucket: str | None = Field(None, description="Store videos in this S3 bucket.")
    s3_prefix: str = Field("", description="Key prefix inside the bucket.")
    s3_endpoint_url: str | None = Field(None, description="Any S3-compatible service (MinIO).")
    s3_region: str | None = Field(None, description="The bucket's region.")
    retention_days: float | None = Field(
        None, gt=0, description="Delete videos and input images this many days after a job ends."
    )
    url_secret: SecretStr | None = Field(
        None, description="HMAC secret of video URLs; default: generated once in the data dir."
    )
    url_ttl_seconds: int = Field(3600, ge=1, description="Lifetime of a signed video URL.")
    lease_seconds: float = Field(30.0, gt=0, description="A worker's lease on a job; renewed.")
    max_attempts: int = Field(3, ge=1, description="Claims of a job before it ends in error.")
    worker_models: list[str] | None = Field(
        None, description="Model ids a worker serves (JSON list); default: all served models."
    )
    worker_concurrency: int = Field(1, ge=1, description="Jobs one worker process runs at once.")
    upstream_concurrency: int = Field(
        32, ge=1, description="Hosted-model jobs one `worker --upstream` process waits on at once."
    )
    drain_seconds: float = Field(
        30.0, ge=0, description="On SIGTERM, time the running job gets before it is given back."
    )
    poll_seconds: float = Field(0.2, gt=0, description="Idle worker's wait between claims.")
    storage_retries: int = Field(
        5, ge=0, description="Times a job is queued again after a storage or database blip."
    )
    storage_retry_seconds: float = Field(
        2.0, ge=0, description="First wait before such a retry; doubles each time, to 5 min."
    )
    job_timeout_seconds: float = Field(
        7200.0, gt=0, description="Longest a job may run (wall clock) unless its model says."
    )
    max_body_bytes: int = Field(_DEFAULT_BODY_LIMIT, ge=1024, description="Largest request body.")
    read_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="A request's headers must arrive within it, its body never pause longer.",
    )
    fetch_allow_private: bool = Field(
        False, description="Let image URLs reach private addresses and any port (tests only)."
    )
    fetch_deadline_seconds: float = Field(20.0, gt=0, description="Total time to fetch an image.")
    webhook_allow_private: bool = Field(
        False, description="Let webhooks reach private addresses and any port (not image URLs)."
    )
    webhook_backoff_seconds: float = Field(
        5.0, gt=0, description="First wait before a failed webhook is sent again; then doubles."
    )
    webhook_timeout_seconds: float = Field(
        10.0, gt=0, description="Time a webhook receiver has to answer one delivery."
    )
    webhook_secret: SecretStr | None = Field(
        None,
        description="Signing secret (`whsec_…`) of the `REELFORGE_API_KEY` key's webhooks.",
    )
    models: Path | None = Field(
        None, description="The model registry (TOML); default: the preview engine serves all."
    )
    preview_scale: float = Field(
        1.0, gt=0, le=1, description="Render preview videos smaller by this factor (load tests)."
    )
    stream_heartbeat_seconds: float = Field(
        15.0, gt=0, description="Silence after which a live stream sends a heartbeat comment."
    )
    stream_poll_seconds: float = Field(
        0.25, gt=0, description="How often an API process with live streams reads new events."
    )
    max_streams: int = Field(
        500, ge=0, description="Live streams one API process serves at once (503 beyond)."
    )
    x264_preset: X264Preset = Field("veryfast", description="libx264 speed/size trade-off.")
    x264_crf: int = Field(20, ge=0, le=51, description="libx264 quality: lower is better.")
    key_rpm: int | None = Field(
        None, ge=1, description="Creates per minute of a key without its own `--rpm`."
    )
    key_max_queued: int | None = Field(
        None, ge=1, description="Jobs queued at once, for a key without its own `--max-queued`."
    )
    key_max_running: int | None = Field(
        None, ge=1, description="Jobs running at once, for a key without its own `--max-running`."
    )
    key_daily_video_seconds: int | None = Field(
        None, ge=1, description="Video seconds per UTC day, for a key without its own limit."
    )
    max_queued: int | None = Field(
        None, ge=1, description="Jobs queued at once, all keys together (503 QueueFull past it)."
    )
    prompt_optimizer_url: str | None = Field(
        None,
        pattern=r"^https?://",
        description="An OpenAI-compatible chat-completions base URL (…/v1) that rewrites prompts.",
    )
    prompt_optimizer_model: str | None = Field(
        None, min_length=1, description="The model the prompt optimizer's URL serves."
    )
    prompt_optimizer_api_key_env: str | None = Field(
        None, min_length=1, description="Name of the environment variable holding its key."
    )
    prompt_optimizer_timeout_seconds: float = Field(
        15.0, gt=0, description="The longest a job waits for its rewritten prompt."
    )

    log_format: Literal["text", "json"] = Field(
        "text", description="Log lines as text, or as JSON objects (`json`)."
    )
    metrics_token: SecretStr | None = Field(
        None, description="Bearer token `GET /metrics` requires; unset: by client address."
    )
    metrics_allow: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="Networks besides loopback that may read `/metrics` without a token (JSON"
        ' list of CIDRs, e.g. `["10.0.0.0/8"]`).',
    )

    @property
    def key_limits(self) -> KeyLimits:
        """The ``REELFORGE_KEY_*`` defaults of every key's limits."""
        return KeyLimits(
            rpm=self.key_rpm,
            max_queued=self.key_max_queued,
            max_running=self.key_max_running,
            daily_video_seconds=self.key_daily_video_seconds,
        )

    @model_validator(mode="after")
    def _optimizer_model(self) -> Self:
        if self.prompt_optimizer_url is not None and self.prompt_optimizer_model is None:
            raise ValueError(
                "REELFORGE_PROMPT_OPTIMIZER_URL needs REELFORGE_PROMPT_OPTIMIZER_MODEL "
                "(the model name its server answers to)"
            )
        return self

    @field_validator("webhook_secret")
    @classmethod
    def _standard_secret(cls, secret: SecretStr | None) -> SecretStr | None:
        """A webhook secret must be Standard Webhooks' ``whsec_<base64>``."""
        if secret is not None and not secret.get_secret_value().startswith("whsec_"):
            raise ValueError("must start with whsec_ (whsec_<base64 of 24 to 64 bytes>)")
        return secret

    @property
    def client_base_url(self) -> str:
        """Where ``reelforge generate|status|download`` send their calls."""
        return self.base_url or f"http://{self.host}:{self.port}/v2"

    @property
    def database_path(self) -> Path:
        return self.data_dir / "reelforge.sqlite3"

    @property
    def local_key_path(self) -> Path:
        """The first key made by ``reelforge serve``, kept (mode 0600) for local tools."""
        return self.data_dir / "api-key"
