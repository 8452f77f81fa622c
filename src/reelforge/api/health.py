"""Liveness (the process answers, its store can be read) and readiness (workers have the
served models loaded)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials

from reelforge.api.deps import ServicesDep
from reelforge.api.openapi import BEARER, error_responses
from reelforge.errors import Unauthorized
from reelforge.jobs.model import REPORT_SECONDS

router = APIRouter()


@router.get(
    "/readyz",
    responses={503: {"description": "Some served models have no ready worker (listed)."}},
)
def readyz(services: ServicesDep) -> JSONResponse:
    """Ready when every served model has a worker that reported it loaded lately (503 with
    the models still waiting otherwise)."""
    ready = services.store.ready_models(within=3 * REPORT_SECONDS + services.settings.poll_seconds)
    waiting = sorted(model for model in services.models if model not in ready)
    body = {"ready": not waiting, "waiting_for": waiting}
    return JSONResponse(body, status_code=503 if waiting else 200)


@router.get(
    "/healthz",
    responses=error_responses(Unauthorized),
    openapi_extra={"security": [{}]},  # added to the bearer scheme's: a key is optional here
)
def healthz(
    services: ServicesDep,
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
) -> dict[str, Any]:
    """Liveness: ``{"status": "ok"}`` without a key. With a valid key, also the counts of
    that key's own jobs by status (never another key's: the counts must not cross tenants);
    a key that is not valid is 401, as on every other route."""
    authorization = request.headers.get("authorization")
    if authorization is None:
        return {"status": "ok"}
    caller = services.caller(authorization)
    counts = services.store.counts(owner=caller.id)
    return {"status": "ok", "jobs": {status.value: count for status, count in counts.items()}}
