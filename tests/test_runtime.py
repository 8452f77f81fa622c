"""A worker process running N jobs at once builds N workers with engines of their own: two
threads never share one pipeline."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("diffusers", reason="the ltx engine needs: pip install 'reelforge[diffusers]'")

from reelforge.engines.ltx import LTXEngine
from reelforge.runtime import build_workers, open_storage, open_store
from reelforge.settings import Settings
from tests import tiny_models
from tests.tiny_models import offline_hub
from tests.tiny_registry import tiny_entry


def test_concurrency_two_loads_two_engines(tmp_path: Path) -> None:
    weights = tiny_models.save_ltx(tmp_path / "ltx")
    registry = tmp_path / "models.toml"
    registry.write_text('hailuo = "ltx"\n' + tiny_entry("ltx", "ltx", str(weights), 2))
    settings = Settings(data_dir=tmp_path / "data", models=registry, worker_concurrency=2)
    store = open_store(settings)
    try:
        with offline_hub():
            workers = build_workers(settings, store, open_storage(settings), prefix="test")
        assert [worker.worker_id for worker in workers] == ["test:0", "test:1"]
        engines = [worker.engines["ltx"] for worker in workers]
        assert all(isinstance(engine, LTXEngine) for engine in engines)
        assert engines[0] is not engines[1]
        assert all(
            worker.engines["minimax/hailuo-02"] is worker.engines["ltx"] for worker in workers
        )
        pipelines = [engine.pipeline for engine in engines if isinstance(engine, LTXEngine)]
        assert pipelines[0] is not pipelines[1]
        assert pipelines[0].transformer is not pipelines[1].transformer
    finally:
        store.close()
