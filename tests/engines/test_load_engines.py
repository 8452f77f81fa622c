"""``load_engines``: one set of loaded engines per call, so each worker thread has its own
pipelines; aliases of one model share an engine within a set."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="the ltx engine needs: pip install 'reelforge[diffusers]'")

from reelforge.engines import load_engines
from reelforge.engines.base import Engine, Keyframes
from reelforge.engines.ltx import LTXEngine
from reelforge.engines.preview import PreviewEngine
from reelforge.engines.registry import PREVIEW, ModelSpec
from reelforge.request import JobRequest
from reelforge.video import Frame
from tests import tiny_models
from tests.tiny_models import StepLog, offline_hub


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelSpec]:
    weights = tiny_models.save_ltx(tmp_path_factory.mktemp("ltx") / "ltx")
    spec = ModelSpec(
        id="ltx",
        engine="ltx",
        weights=str(weights),
        dtype="float32",
        device="cpu",
        steps=2,
        canvas=(32, 64),
        keep_native_size=True,
    )
    return {"ltx": spec, "minimax/hailuo-02": spec, "preview": PREVIEW}


def clip(engine: Engine) -> Frame:
    request = JobRequest(prompt="a red kite", duration_s=1, seed=3)
    return np.stack(list(engine.generate(request, Keyframes(), StepLog()).frames))


def test_two_calls_give_distinct_engines_and_pipelines(registry: dict[str, ModelSpec]) -> None:
    with offline_hub():
        one, two = (load_engines(registry, list(registry), preview_scale=0.5) for _ in "12")
    assert sorted(one) == ["ltx", "minimax/hailuo-02", "preview"]
    assert one["minimax/hailuo-02"] is one["ltx"]  # an alias shares its model's engine
    first, second = one["ltx"], two["ltx"]
    assert isinstance(first, LTXEngine)
    assert isinstance(second, LTXEngine)
    assert first is not second
    assert first.pipeline is not second.pipeline
    assert first.pipeline.transformer is not second.pipeline.transformer
    weights = [{p.data_ptr() for p in e.pipeline.transformer.parameters()} for e in (first, second)]
    assert weights[0].isdisjoint(weights[1])  # no tensor shared between the two
    assert one["preview"] is not two["preview"]
    assert isinstance(one["preview"], PreviewEngine)
    assert one["preview"].scale == 0.5


def test_two_threads_generate_at_once_each_on_its_own_pipeline(
    registry: dict[str, ModelSpec],
) -> None:
    with offline_hub():
        loaded = [load_engines(registry, ["ltx"])["ltx"] for _ in range(2)]
    engines = [engine for engine in loaded if isinstance(engine, LTXEngine)]
    assert len(engines) == 2
    alone = clip(engines[0])
    with ThreadPoolExecutor(max_workers=2) as pool:
        together = list(pool.map(clip, engines))
    for frames in together:
        assert np.array_equal(frames, alone)


def test_only_the_models_asked_for_are_loaded(registry: dict[str, ModelSpec]) -> None:
    assert list(load_engines(registry, ["preview"])) == ["preview"]


def test_a_model_not_served_is_refused(registry: dict[str, ModelSpec]) -> None:
    with pytest.raises(ValueError, match=r"models \['sora'\] are not served"):
        load_engines(registry, ["preview", "sora"])
