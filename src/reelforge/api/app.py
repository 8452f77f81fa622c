"""The HTTP API: ``create_app(services)`` builds it from parts made once per process."""

from __future__ import annotations

from fastapi import FastAPI

from reelforge import __version__
from reelforge.api import docs, errors, files, health, observe, playground, webhooks
from reelforge.api.deps import Services
from reelforge.api.dialects import DIALECTS
from reelforge.api.headers import SecurityHeaders
from reelforge.api.hot import HotRoutes
from reelforge.api.limits import BodyLimit
from reelforge.api.openapi import openapi_document

__all__ = ["Services", "create_app"]


def create_app(services: Services) -> FastAPI:
    app = FastAPI(
        title="reelforge",
        version=__version__,
        description="Video generation speaking the MiniMax Hailuo-02 contract of the AI/ML API.",
        # FastAPI's native OpenTelemetry is asked on every request whether it is configured;
        # reelforge exports its own metrics, so it is off.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        docs_url=None,  # served by ``api.docs`` from the package, not a CDN
        redoc_url=None,
    )
    app.openapi = openapi_document(app)  # type: ignore[method-assign]
    app.state.services = services
    errors.install(app)
    app.add_middleware(BodyLimit, limit=services.settings.max_body_bytes)
    for dialect in DIALECTS:
        app.include_router(dialect.router)
    hot = {path: route for dialect in DIALECTS for path, route in dialect.hot_routes.items()}
    app.add_middleware(HotRoutes, routes=hot)
    app.add_middleware(SecurityHeaders, hot_paths=hot)
    # added last: the outermost, so that it times and logs the hot routes too
    app.add_middleware(
        observe.RequestLog, metrics=services.metrics, lines=services.request_lines, hot_paths=hot
    )
    app.include_router(files.router)
    app.include_router(health.router)
    app.include_router(docs.router)
    app.include_router(webhooks.router)
    app.include_router(playground.router)
    app.include_router(observe.router)
    return app
