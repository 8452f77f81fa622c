"""Generators behind one interface (``engines.base.Engine``), one module each; the table of
them is ``engines.registry.ENGINES``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from reelforge.engines.base import AnyEngine
from reelforge.engines.registry import ENGINES, ModelSpec


def build_engine(spec: ModelSpec, *, preview_scale: float = 1.0) -> AnyEngine:
    """The engine for ``spec`` (not loaded yet). The diffusers engines need the extra:
    ``pip install 'reelforge[diffusers]'``."""
    kind = ENGINES.get(spec.engine)
    if kind is None:
        raise ValueError(f"model {spec.id!r}: unknown engine {spec.engine!r}")
    try:
        return kind.build(spec, preview_scale)
    except ImportError as exc:
        raise RuntimeError(
            f"model {spec.id!r} uses the {spec.engine} engine, which needs: "
            f"pip install 'reelforge[diffusers]' ({exc})"
        ) from exc


def load_engines(
    registry: Mapping[str, ModelSpec], models: Iterable[str], *, preview_scale: float = 1.0
) -> dict[str, AnyEngine]:
    """Model id → a freshly built and loaded engine, for each of ``models``; ids that name the
    same spec (``minimax/hailuo-02`` is an alias) share one engine.

    Every call builds new engines (and so new pipelines): a worker running N jobs at once
    calls this N times, one set per thread. ``ValueError`` if a model is not in ``registry``.
    """
    wanted = sorted(set(models))
    unknown = [model for model in wanted if model not in registry]
    if unknown:
        raise ValueError(f"models {unknown} are not served; served: {sorted(registry)}")
    loaded: dict[str, AnyEngine] = {}
    for model in wanted:
        spec = registry[model]
        if spec.id not in loaded:
            engine = build_engine(spec, preview_scale=preview_scale)
            engine.load()
            loaded[spec.id] = engine
    return {model: loaded[registry[model].id] for model in wanted}
