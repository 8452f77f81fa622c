"""The typed options of each engine: what a registry entry's ``options`` table may hold, and
what a request's ``options`` may ask of a model.

Pydantic checks names, types and ranges; what needs the machine or the checkpoint (offload
needs an accelerator, an attention backend diffusers knows, a Wan checkpoint's frame rate)
is checked by the engine at ``load``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Annotated, Any, Final, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

from reelforge.errors import InvalidRequest

PositiveWhole = Annotated[StrictInt, Field(gt=0)]
"""A whole number above 0 (``true`` is not one)."""
NonNegative = Annotated[float, Field(ge=0, strict=True)]
"""A number >= 0, whole or not (``true`` is not one)."""

CACHES: Final = ("first_block", "taylorseer", "pab")


class EngineOptions(BaseModel):
    """Base of the per-engine option models: frozen, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class PreviewOptions(EngineOptions):
    """The preview engine takes no registry options."""


class DiffusersOptions(EngineOptions):
    """Options the Wan and LTX engines share."""

    cpu_offload: Literal["model", "sequential", "group"] | None = None
    """Keep weights in CPU memory, moving each part (model), layer (sequential) or block
    (group) to the accelerator as it runs; None: the whole pipeline on the device."""
    vae_tiling: StrictBool = False
    """Decode the video in tiles: less accelerator memory for large canvases."""
    attention_backend: StrictStr | None = None
    """A diffusers attention backend name (``native``, ``flash``, ...), checked at load."""
    cache: Literal["first_block", "taylorseer", "pab"] | None = None
    """Reuse transformer outputs across denoising steps (faster, slightly different)."""
    compile: StrictBool = False
    """``torch.compile`` each transformer's repeated blocks (at the first call)."""
    fps: PositiveWhole | None = None
    """The output's frame rate, in frames per second; None: the engine's native rate."""
    guidance_scale: NonNegative | None = None
    """Classifier-free guidance; None: the engine's default. A request may override it."""
    negative_prompt: StrictStr | None = None
    """What to steer away from; None: the engine's default. A request may override it."""


class WanOptions(DiffusersOptions):
    """Options of the Wan engine."""

    @field_validator("cache", mode="before")
    @classmethod
    def _no_faster_cache(cls, value: Any) -> Any:
        if isinstance(value, str) and "faster" in value.lower():
            raise ValueError(f"FasterCache fails on Wan's transformer; use {' or '.join(CACHES)}")
        return value


class LTXOptions(DiffusersOptions):
    """Options of the LTX engine."""


class MiniMaxH3Options(EngineOptions):
    """Options of the MiniMax-H3 engine (no guidance, no negative prompt: both are distilled
    into the weights; 24 fps fixed)."""

    cpu_offload: Literal[False, "model"] = False
    """``"model"``: diffusers' auto offload keeps parts in CPU memory until they run."""
    vae_tiling: StrictBool | None = None
    """True/False: switch the video VAE's tiling on/off; None: the checkpoint's default (on)."""
    attention_backend: StrictStr | None = None
    """A diffusers attention backend name for the transformer, checked at load."""


class UpstreamOptions(EngineOptions):
    """Options of the gateway engine (``engine = "upstream"``): which hosted API to call.

    The provider key is read from the environment variable ``api_key_env`` when the engine
    is built; it is never stored in the database nor logged."""

    provider: Literal["aiml", "minimax", "openai"]
    """``aiml``: the AI/ML API's Hailuo routes (reelforge's contract); ``minimax``: MiniMax's
    native API; ``openai``: any ``/v1/videos`` server (OpenAI, vLLM-Omni, another reelforge)."""
    base_url: StrictStr
    """What the provider's paths are appended to: ``aiml`` ends in ``/v2``, ``openai`` in
    ``/v1``, ``minimax`` is the host root (its paths start with ``/v1/``)."""
    api_key_env: StrictStr
    """The environment variable holding the provider key."""
    model: StrictStr
    """The provider's model id."""
    poll_seconds: Annotated[float, Field(gt=0, strict=True)] = 2.0
    """The least time between two polls of one job, in seconds (the provider may ask more)."""
    request_timeout_seconds: Annotated[float, Field(gt=0, strict=True)] = 30.0
    """The longest one HTTP call to the provider may take, in seconds."""
    fallback: StrictStr | None = None
    """Another served model id that takes the job when this one fails for a reason that is
    not the request's (the provider's generation failed, or it stayed unreachable)."""

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return url.rstrip("/")


class RequestOptions(BaseModel):
    """Per-request model options (``JobRequest.options``); None: the registry's value, else
    the engine's default. Which of them a model takes: ``Capabilities.request_options``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    negative_prompt: StrictStr | None = None
    num_inference_steps: Annotated[StrictInt, Field(ge=1, le=200)] | None = None
    """Denoising steps."""
    guidance_scale: NonNegative | None = None


def request_options(options: Mapping[str, Any], taken: Collection[str]) -> RequestOptions:
    """``options`` read as ``RequestOptions``; ``InvalidRequest`` naming the first option the
    model does not take (not in ``taken``) or whose value is wrong."""
    for name in options:
        if name not in taken:
            known = ", ".join(taken) or "none"
            raise InvalidRequest(f"options.{name}", f"this model does not take it (takes: {known})")
    try:
        return RequestOptions.model_validate(dict(options))
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in ("options", *error["loc"]))
        raise InvalidRequest(where, f"{error['input']!r}: {error['msg']}") from None
