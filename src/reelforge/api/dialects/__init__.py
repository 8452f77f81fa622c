"""The wire dialects reelforge speaks, one module each, all over one job store.

To add a dialect: write ``api/dialects/<name>.py`` exporting ``DIALECT`` (its routes, its
request/response shapes and aliases, its error envelope, the mapping to ``JobRequest`` and
from ``Job``) and list it in ``DIALECTS``. Errors raised anywhere under its prefixes are
rendered in its envelope (``api/errors.py``). Base its request bodies on ``StrictBody`` (an
unknown field is a 400 naming it) and declare each route's statuses with
``api.openapi.error_responses(...)``: ``tests/api/test_openapi.py`` fuzzes every route.
"""

from __future__ import annotations

from typing import Final

from reelforge.api.dialects import hailuo, minimax, openai
from reelforge.api.dialects.base import Dialect

DIALECTS: Final[tuple[Dialect, ...]] = (hailuo.DIALECT, openai.DIALECT, minimax.DIALECT)
DEFAULT: Final = hailuo.DIALECT
"""Whose envelope errors outside every dialect's prefixes take (files, health)."""


def dialect_for(path: str) -> Dialect:
    """The dialect whose routes ``path`` is under; the default one elsewhere."""
    for dialect in DIALECTS:
        if path.startswith(dialect.prefixes):
            return dialect
    return DEFAULT
