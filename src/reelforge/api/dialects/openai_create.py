"""The OpenAI dialect's create body (``POST /v1/videos``): a multipart/form-data or JSON body
read into a ``Submission``, every field checked and named (see ``openai.py`` for the fields).

A form's values are all text (``seed`` "42", ``enhance_prompt`` "true"); JSON's are typed
(``seed`` 42), but ``seconds`` is text in both, as OpenAI's SDK sends it ("4"), or a JSON
integer. Unknown fields are refused; defaults come from the model's capabilities; the model's
own rules (length, size, rate, options, images) are ``accept``'s.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

from fastapi import Request
from starlette.datastructures import UploadFile

from reelforge.api.accept import ImageInput, Submission, image_input, webhook_url
from reelforge.contract import DEFAULT_MODEL, MAX_PROMPT_CHARS
from reelforge.engines.registry import ModelSpec, capabilities
from reelforge.errors import InvalidRequest
from reelforge.request import DEFAULT_SIZE, Dimensions, JobRequest, OutputSize

NAME: Final = "openai"
DEFAULT_SECONDS: Final = 4
DEFAULT_DIMENSIONS: Final = Dimensions(720, 1280)
OPTIONS: Final = ("negative_prompt", "num_inference_steps", "guidance_scale")
"""vLLM-Omni's generation fields that are model options (checked against the model)."""
REFERENCES: Final = {"input_reference": "first_frame", "last_reference": "last_frame"}
FIELDS: Final = frozenset(
    {"prompt", "model", "seconds", "size", "seed", "enhance_prompt", "callback_url", "lora"}
    | {"fps", "width", "height", *OPTIONS}
    | {f"{ref}{part}" for ref in REFERENCES for part in ("", "[image_url]", "[file_id]")}
)
_REFERENCE_FORM: Final = {"type": "string", "format": "binary"}
_REFERENCE_JSON: Final = {
    "type": "object",
    "properties": {"image_url": {"type": "string"}},
    "additionalProperties": False,
}
_COMMON: Final[dict[str, Any]] = {
    "prompt": {"type": "string", "minLength": 1, "maxLength": MAX_PROMPT_CHARS},
    "model": {"type": "string"},
    "size": {"type": "string", "pattern": "^[1-9][0-9]*x[1-9][0-9]*$"},
    "callback_url": {"type": "string"},
    "lora": {"type": "string"},
    "negative_prompt": {"type": "string"},
}
OPENAPI_BODY: Final = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["prompt"],
                    "properties": _COMMON
                    | {name: {"type": "string"} for name in ("seconds", "seed", "fps")}
                    | dict.fromkeys(REFERENCES, _REFERENCE_FORM)
                    | {f"{ref}[image_url]": {"type": "string"} for ref in REFERENCES},
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["prompt"],
                    "properties": _COMMON
                    | {"seconds": {"type": ["string", "integer"]}, "seed": {"type": "integer"}}
                    | {"enhance_prompt": {"type": "boolean"}, "fps": {"type": "integer"}}
                    | dict.fromkeys(REFERENCES, _REFERENCE_JSON),
                    "additionalProperties": False,
                }
            },
        },
    }
}
"""The create body for the OpenAPI document (the route reads the request itself)."""
FORM_TYPES: Final = ("multipart/form-data", "application/x-www-form-urlencoded")
_SIZE: Final = re.compile(r"([1-9][0-9]{0,4})x([1-9][0-9]{0,4})")
_WHOLE: Final = re.compile(r"[0-9]{1,10}")
_NUMBER: Final = re.compile(r"-?[0-9]{1,10}(\.[0-9]{1,10})?")


async def read_fields(request: Request, limit: int) -> tuple[dict[str, Any], bool]:
    """The body's fields (uploaded files as bytes, JSON's reference objects as bracketed
    keys) and whether it was a form (every value text)."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(FORM_TYPES):
        fields: dict[str, Any] = {}
        async with request.form(max_part_size=limit) as form:  # closes the uploads' files
            for key, value in form.multi_items():
                fields[key] = await value.read() if isinstance(value, UploadFile) else value
        return fields, True
    if not content_type.startswith("application/json"):
        raise InvalidRequest("body", "send multipart/form-data or application/json")
    try:
        body = json.loads(await request.body())
    except ValueError as exc:
        raise InvalidRequest("body", f"not valid JSON ({exc})") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("body", "must be a JSON object")
    for ref in REFERENCES:
        if body.get(ref) is not None:
            value = body.pop(ref)
            if not isinstance(value, dict) or not value or set(value) - {"image_url", "file_id"}:
                raise InvalidRequest(ref, 'must be an object {"image_url": "<URL or data URL>"}')
            body.update({f"{ref}[{part}]": item for part, item in value.items()})
    return {key: value for key, value in body.items() if value is not None}, False


def submission(
    fields: Mapping[str, Any], form: bool, models: Mapping[str, ModelSpec]
) -> Submission:
    """The create body as a submission: unknown fields refused, types checked, defaults
    filled from the model's capabilities (the model's own rules are ``accept``'s)."""
    unknown = sorted(set(fields) - FIELDS)
    if unknown:
        others = f" (nor are {', '.join(unknown[1:])})" if len(unknown) > 1 else ""
        raise InvalidRequest(unknown[0], f"is not a field of this API{others}")
    model = _text(fields, "model") or DEFAULT_MODEL
    spec = models.get(model)
    if spec is None:
        known = ", ".join(sorted(models))
        raise InvalidRequest("model", f"{model!r} is not served here; known: {known}")
    prompt = _text(fields, "prompt")
    if prompt is None or not 1 <= len(prompt) <= MAX_PROMPT_CHARS:
        raise InvalidRequest("prompt", f"required, 1 to {MAX_PROMPT_CHARS} characters")
    options = {name: _option(fields, name, form) for name in OPTIONS if name in fields}
    seconds = _integer(fields, "seconds", text=True)
    request = JobRequest(
        prompt=prompt,
        duration_s=default_seconds(spec) if seconds is None else seconds,
        size=_size(fields, form) or default_size(spec),
        fps=_integer(fields, "fps", text=form),
        seed=_integer(fields, "seed", text=form, high=2**32 - 1),
        prompt_optimizer=_boolean(fields, "enhance_prompt", form),
        options=options,
    )
    return Submission(
        model=model,
        request=request,
        dialect=NAME,
        first=_reference(fields, "input_reference"),
        last=_reference(fields, "last_reference"),
        fields={"duration_s": "seconds", "prompt_optimizer": "enhance_prompt"}
        | {canonical: ref for ref, canonical in REFERENCES.items()},
        callback_url=_callback_url(fields),
        lora=_text(fields, "lora"),
    )


def default_seconds(spec: ModelSpec) -> int:
    """OpenAI's 4 s where the model makes it, else the shortest it makes."""
    can = capabilities(spec)
    return (
        DEFAULT_SECONDS
        if can.min_seconds <= DEFAULT_SECONDS <= can.max_seconds
        else can.min_seconds
    )


def default_size(spec: ModelSpec) -> OutputSize:
    """OpenAI's 720x1280 where the model makes it, else reelforge's 768P."""
    can = capabilities(spec)
    fits = can.size_refusal(DEFAULT_DIMENSIONS.width, DEFAULT_DIMENSIONS.height) is None
    return DEFAULT_DIMENSIONS if fits else DEFAULT_SIZE


def _text(fields: Mapping[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidRequest(name, f"must be a string (got {_shown(value)})")
    return value


def _integer(fields: Mapping[str, Any], name: str, *, text: bool, high: int = 10**6) -> int | None:
    """A whole number from 0 to ``high``; given as text where ``text`` (a form, ``seconds``)."""
    value = fields.get(name)
    if value is None:
        return None
    if text and isinstance(value, str) and _WHOLE.fullmatch(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise InvalidRequest(name, f"must be a whole number from 0 to {high} (got {_shown(value)})")
    return value


def _boolean(fields: Mapping[str, Any], name: str, form: bool) -> bool:
    value = fields.get(name, False)
    if form and value in ("true", "false"):
        return bool(value == "true")
    if not isinstance(value, bool):
        raise InvalidRequest(name, f"must be true or false (got {_shown(value)})")
    return value


def _option(fields: Mapping[str, Any], name: str, form: bool) -> str | int | float:
    """A model option: ``negative_prompt`` text, ``num_inference_steps`` a whole number,
    ``guidance_scale`` a number."""
    if name == "negative_prompt":
        return _text(fields, name) or ""
    if name == "num_inference_steps":
        return _integer(fields, name, text=form, high=1000) or 0
    value = fields[name]
    if form and isinstance(value, str) and _NUMBER.fullmatch(value):
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
        raise InvalidRequest(name, f"must be a number from 0 to 100 (got {_shown(value)})")
    return value


def _size(fields: Mapping[str, Any], form: bool) -> Dimensions | None:
    """``size`` as ``WxH``, or vLLM-Omni's ``width`` and ``height`` (both, agreeing with
    ``size`` if it is given too)."""
    text = _text(fields, "size")
    size = None
    if text is not None:
        match = _SIZE.fullmatch(text)
        if match is None:
            raise InvalidRequest(
                "size", f"must be WIDTHxHEIGHT in pixels, e.g. 1280x720 (got {text!r})"
            )
        size = Dimensions(int(match[1]), int(match[2]))
    width, height = _integer(fields, "width", text=form), _integer(fields, "height", text=form)
    if width is None and height is None:
        return size
    if width is None or height is None:
        raise InvalidRequest(
            "width" if width is None else "height", "give width and height together"
        )
    if size is not None and size != Dimensions(width, height):
        raise InvalidRequest("size", f"{size} disagrees with width x height {width}x{height}")
    return Dimensions(width, height)


def _reference(fields: Mapping[str, Any], name: str) -> ImageInput | None:
    """An uploaded image, or ``[image_url]`` (a URL or data URL); ``[file_id]`` is refused."""
    if f"{name}[file_id]" in fields:
        raise InvalidRequest(
            name,
            "file ids are not supported (reelforge has no files API); "
            f"upload the image or send {name}[image_url]",
        )
    upload, url = fields.get(name), _text(fields, f"{name}[image_url]")
    if upload is not None and url is not None:
        raise InvalidRequest(name, f"send the file or {name}[image_url], not both")
    if url is not None:
        return image_input(url, name)
    if upload is None:
        return None
    if not isinstance(upload, bytes):
        raise InvalidRequest(
            name, f"must be an uploaded image file; for a URL send {name}[image_url]"
        )
    return ImageInput(field=name, data=upload)


def _callback_url(fields: Mapping[str, Any]) -> str | None:
    return webhook_url(_text(fields, "callback_url"))


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
