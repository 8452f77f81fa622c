"""Generators behind one interface (``engines.base.Engine``), one module each."""

from __future__ import annotations

from reelforge.engines.base import Engine
from reelforge.engines.registry import ModelSpec


def build_engine(spec: ModelSpec, *, preview_scale: float = 1.0) -> Engine:
    """The engine for ``spec`` (not loaded yet). The diffusers engines need the extra:
    ``pip install 'reelforge[diffusers]'``."""
    if spec.engine == "preview":
        from reelforge.engines.preview import PreviewEngine

        return PreviewEngine(scale=preview_scale)
    try:
        if spec.engine == "wan":
            from reelforge.engines.wan import WanEngine

            return WanEngine(spec)
        if spec.engine == "ltx":
            from reelforge.engines.ltx import LTXEngine

            return LTXEngine(spec)
        if spec.engine == "minimax_h3":
            from reelforge.engines.minimax_h3 import MiniMaxH3Engine

            return MiniMaxH3Engine(spec)
    except ImportError as exc:
        raise RuntimeError(
            f"model {spec.id!r} uses the {spec.engine} engine, which needs: "
            f"pip install 'reelforge[diffusers]' ({exc})"
        ) from exc
    raise ValueError(f"model {spec.id!r}: unknown engine {spec.engine!r}")
