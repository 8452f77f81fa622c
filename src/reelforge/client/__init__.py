"""The reelforge SDK: ``Client`` and ``AsyncClient`` for reelforge and for the reference
service alike (same contract; the base URL and key are settings)."""

from reelforge.client.api import AsyncClient, Client
from reelforge.client.errors import (
    ApiError,
    ClientError,
    GenerationFailed,
    InvalidInput,
    Timeout,
    TransportError,
)
from reelforge.client.flows import Policy
from reelforge.client.models import Generation, Page

__all__ = [
    "ApiError",
    "AsyncClient",
    "Client",
    "ClientError",
    "Generation",
    "GenerationFailed",
    "InvalidInput",
    "Page",
    "Policy",
    "Timeout",
    "TransportError",
]
