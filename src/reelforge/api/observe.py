"""What an operator sees of the API: one log line and two metrics per request
(``RequestLog``), the request's id (``X-Request-Id``), and ``GET /metrics``.

``RequestLog`` is the outermost middleware, so it sees the hot routes (``api.hot``) too. A
request's route is its template (``/v1/video/generations/{video_id}``), never its path or
query (a signed link's signature is in its query); a path no route matches is
``UNMATCHED``, so that scanners cannot grow the series without bound.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import re
import time
from collections.abc import Collection, Iterator
from typing import Annotated, Final

from fastapi import APIRouter, Request, Security
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from reelforge.api.deps import KEY_ID, Services, ServicesDep
from reelforge.api.openapi import BEARER, error_responses
from reelforge.contract import Status
from reelforge.errors import Forbidden, Unauthorized
from reelforge.jobs.model import REPORT_SECONDS
from reelforge.logs import RequestLines
from reelforge.metrics import Metrics, multiprocess_dir

UNMATCHED: Final = "<unmatched>"
REQUEST_ID: Final = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
"""A client's ``X-Request-Id`` kept as it is; any other is replaced by a made one."""


class RequestLog:
    """ASGI middleware: each HTTP request counted (``reelforge_http_requests_total``), timed
    (``reelforge_http_request_duration_seconds``) and logged on one line (method, route,
    status, ms, key id, request id) once answered; its ``X-Request-Id`` echoed."""

    def __init__(
        self, app: ASGIApp, *, metrics: Metrics, lines: RequestLines, hot_paths: Collection[str]
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.lines = lines
        self.hot_paths = frozenset(hot_paths)
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope["headers"])
        status = 500  # what the client gets if nothing was sent (uvicorn answers 500)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", ()), (b"x-request-id", request_id)]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self._record(scope, status, time.perf_counter() - started, request_id.decode())

    def _record(self, scope: Scope, status: int, seconds: float, request_id: str) -> None:
        method, route = scope["method"], self._route(scope)
        counted = self._series.get((method, route, status))
        if counted is None:  # the first of this series: ``labels`` is slower than a dict
            counted = self._series[method, route, status] = (
                self.metrics.requests.labels(method, route, str(status)),
                self.metrics.request_seconds.labels(method, route),
            )
        counted[0].inc()
        counted[1].observe(seconds)
        self.lines.add(method, route, status, seconds, scope.get(KEY_ID, "-"), request_id)

    def _route(self, scope: Scope) -> str:
        route = scope.get("route")
        template = getattr(route, "path", None)
        if isinstance(template, str):
            return template
        path: str = scope["path"]
        return path if path in self.hot_paths else UNMATCHED


def _request_id(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The client's ``X-Request-Id`` if it is 1 to 128 safe characters, else a new one."""
    for name, value in headers:
        if name == b"x-request-id" and REQUEST_ID.fullmatch(value):
            return value
    return os.urandom(16).hex().encode()  # as unique as a uuid4, at a fraction of its cost


router = APIRouter()


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus' text format."},
        **error_responses(Unauthorized, Forbidden),
    },
    openapi_extra={"security": [{}]},  # without REELFORGE_METRICS_TOKEN no token is needed
)
def metrics(
    services: ServicesDep,
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
) -> Response:
    """Every process's metrics in Prometheus' text format, and the store's queued and
    running jobs and ready models at this moment. With ``REELFORGE_METRICS_TOKEN`` set, only
    for that bearer token (401 otherwise); unset, only for clients on loopback or in
    ``REELFORGE_METRICS_ALLOW`` (403 otherwise)."""
    allow_scrape(services, request)
    return Response(generate_latest(Scrape(services)), media_type=CONTENT_TYPE_LATEST)


def allow_scrape(services: Services, request: Request) -> None:
    """Nothing if ``request`` may read the metrics; ``Unauthorized`` or ``Forbidden``."""
    settings = services.settings
    if settings.metrics_token is not None:
        token = settings.metrics_token.get_secret_value().encode()
        sent = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(sent, b"Bearer " + token):
            raise Unauthorized("/metrics needs 'Authorization: Bearer <REELFORGE_METRICS_TOKEN>'")
        return
    host = request.client.host if request.client is not None else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or not (
        address.is_loopback or any(address in net for net in settings.metrics_allow)
    ):
        raise Forbidden(
            "/metrics answers loopback and REELFORGE_METRICS_ALLOW only (or set"
            " REELFORGE_METRICS_TOKEN)"
        )


class Scrape(Collector):
    """One scrape: the counted metrics (every process's in multiprocess mode, else this
    one's), then the store's gauges, read now."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        folder = multiprocess_dir()
        if folder is not None:
            collector = MultiProcessCollector(None, path=folder)  # type: ignore[no-untyped-call]
            yield from collector.collect()  # type: ignore[no-untyped-call]
        else:
            yield from self.services.metrics.registry.collect()
        yield from self._store_gauges()

    def _store_gauges(self) -> Iterator[Metric]:
        services = self.services
        queued = GaugeMetricFamily("reelforge_jobs_queued", "Jobs queued now.", labels=["model"])
        running = GaugeMetricFamily(
            "reelforge_jobs_running", "Jobs generating now.", labels=["model"]
        )
        active = services.store.active_by_model()
        models = sorted(set(services.models) | {model for model, _ in active})
        for model in models:
            queued.add_metric([model], active.get((model, Status.QUEUED), 0))
            running.add_metric([model], active.get((model, Status.GENERATING), 0))
        ready = GaugeMetricFamily(
            "reelforge_model_ready",
            "1 if some worker reported the served model loaded lately (as /readyz), else 0.",
            labels=["model"],
        )
        within = 3 * REPORT_SECONDS + services.settings.poll_seconds
        loaded = services.store.ready_models(within=within)
        for model in sorted(services.models):
            ready.add_metric([model], 1.0 if model in loaded else 0.0)
        yield from (queued, running, ready)
