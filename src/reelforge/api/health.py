"""Liveness (the process answers, its store can be read) and readiness (workers have the
served models loaded)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from reelforge.api.deps import ServicesDep
from reelforge.jobs.model import REPORT_SECONDS

router = APIRouter()


@router.get("/readyz")
def readyz(services: ServicesDep) -> JSONResponse:
    """Ready when every served model has a worker that reported it loaded lately (503 with
    the models still waiting otherwise)."""
    ready = services.store.ready_models(within=3 * REPORT_SECONDS + services.settings.poll_seconds)
    waiting = sorted(model for model in services.models if model not in ready)
    body = {"ready": not waiting, "waiting_for": waiting}
    return JSONResponse(body, status_code=503 if waiting else 200)


@router.get("/healthz")
def healthz(services: ServicesDep) -> dict[str, Any]:
    counts = services.store.counts()
    return {"status": "ok", "jobs": {status.value: count for status, count in counts.items()}}
