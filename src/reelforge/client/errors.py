"""What can go wrong for a client: the API refused, the generation failed, the network
failed, or time ran out. All are ``ClientError``s."""

from __future__ import annotations

from reelforge.errors import InvalidRequest


class ClientError(Exception):
    """Base of the SDK's errors."""


class InvalidInput(ClientError, InvalidRequest):
    """A local input breaks the contract's rules; found before anything was sent."""


class ApiError(ClientError):
    """The API refused the call (4xx): ``status``, and the server's ``name`` and ``message``."""

    def __init__(self, status: int, name: str, message: str) -> None:
        super().__init__(f"{status} {name}: {message}")
        self.status, self.name, self.message = status, name, message


class GenerationFailed(ClientError):
    """The generation ended in ``error``; ``name`` and ``message`` are its ``error`` fields."""

    def __init__(self, generation_id: str, name: str, message: str) -> None:
        super().__init__(f"generation {generation_id} failed: {name}: {message}")
        self.generation_id, self.name, self.message = generation_id, name, message


class TransportError(ClientError):
    """The server could not be reached, or kept failing (5xx), after the retries."""


class Timeout(ClientError):
    """The deadline passed before the generation ended."""
