from __future__ import annotations

import av

from tests.service import UNIFIED, Api


def test_create_poll_and_download_a_playable_video(service: Api) -> None:
    created = service.create({"model": "minimax/hailuo-02", "prompt": "A lighthouse [Pan left]"})
    assert created.status_code == 200
    body = created.json()
    assert body["status"] == "queued"
    done = service.wait(body["generation_id"])
    assert done["status"] == "completed", done
    assert done["error"] is None
    assert done["progress"] == 100
    assert done["meta"]["usage"]["credits_used"] > 0
    video = service.client.get(done["video"]["url"])
    assert video.status_code == 200
    assert video.headers["content-type"] == "video/mp4"
    path = service.settings.data_dir / "downloaded.mp4"
    path.write_bytes(video.content)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height, stream.frames) == (1366, 768, 150)


def test_both_routes_read_the_same_generations(api: Api) -> None:
    created = api.create({"model": "minimax/hailuo-02", "prompt": "x"}, route=UNIFIED).json()
    assert set(created) == {"id", "status"}
    assert api.get(created["id"])["id"] == created["id"]
    assert api.get(created["id"], route=UNIFIED)["status"] == "queued"
