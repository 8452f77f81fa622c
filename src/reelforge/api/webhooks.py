"""``GET /v2/webhooks/deliveries``: the caller's webhook attempts, newest first."""

from __future__ import annotations

from typing import Annotated, Any, Final

from fastapi import APIRouter, Query

from reelforge.api.deps import CallerDep, ServicesDep

DELIVERIES: Final = "/v2/webhooks/deliveries"

router = APIRouter()


@router.get(DELIVERIES)
async def deliveries(
    caller: CallerDep,
    services: ServicesDep,
    generation_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Every attempt of the caller's webhooks (of one generation with ``generation_id``):
    ``{data: [{webhook_id, generation_id, event, url, attempt, at, status_code, error}]}``,
    ``at`` in epoch seconds, ``status_code`` null when no answer came."""
    attempts = services.store.attempts(owner=caller.id, job_id=generation_id, limit=limit)
    data = [
        {
            "webhook_id": attempt.webhook_id,
            "generation_id": attempt.job_id,
            "event": attempt.event,
            "url": attempt.url,
            "attempt": attempt.attempt,
            "at": attempt.at,
            "status_code": attempt.status_code,
            "error": attempt.error,
        }
        for attempt in attempts
    ]
    return {"data": data}
