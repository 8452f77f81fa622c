"""The playground at ``/``: served from the package under its own strict CSP, and used in a
real browser (Debian's Chromium driven by Playwright) against a real server and worker on
loopback, as a person would: key, prompt, camera chip, first frame, generate, watch, play.

The browser tests skip without chromium or playwright, unless ``REELFORGE_REQUIRE_BROWSER=1``
(CI), where they fail instead. Screenshots go to ``REELFORGE_SCREENSHOT_DIR`` if set, else to
the session's temp folder.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from reelforge.api.headers import PLAYGROUND_POLICY
from reelforge.api.playground import files as playground_files
from reelforge.contract import MAX_IMAGE_BYTES, MIN_IMAGE_SHORT_SIDE
from reelforge.media.camera import Movement
from tests.pictures import encoded, textured
from tests.service import TEST_KEY, UNIFIED, Api, running_api, running_workers, service_settings

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REQUIRED = os.environ.get("REELFORGE_REQUIRE_BROWSER") == "1"
TESTIDS = (
    *("api-key", "prompt", "model", "duration", "resolution", "first-frame", "last-frame"),
    *("generate", "status", "progress", "video", "error", "history"),
)
STREAM = "/v2/video/generations/events?"
"""The live event stream: the page tries it first and polls where it is not served (404)."""
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    settings = service_settings(tmp_path_factory.mktemp("playground"))
    with running_api(settings) as live, running_workers(settings):
        yield live


# --- the page as files ---------------------------------------------------------------------


def test_the_page_is_served_under_its_strict_policy_with_every_testid(service: Api) -> None:
    answer = service.client.get("/", headers={"Authorization": ""})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert answer.headers["content-security-policy"] == PLAYGROUND_POLICY
    assert "'unsafe-inline'" not in PLAYGROUND_POLICY
    page = answer.text
    for inline in ("<script>", "<style", "style="):
        assert inline not in page
    for outside in ("http://", "https://"):
        assert outside not in page
    assert TEST_KEY not in page  # the page never embeds a key
    for testid in TESTIDS:
        assert f'data-testid="{testid}"' in page, testid
    for asset in re.findall(r'(?:src|href)="(playground/[^"]+)"', page):
        served = service.client.get("/" + asset)
        assert served.status_code == 200, asset
        assert served.headers["content-type"].startswith(("text/javascript", "text/css"))


def test_only_the_pages_own_files_are_served(service: Api) -> None:
    assert service.client.get("/playground/api.js").status_code == 200
    for name in ("index.html", "nothing.js", "..%2Fplayground.py"):
        assert service.client.get(f"/playground/{name}").status_code == 404


def test_every_file_of_the_page_is_listed_and_served(service: Api) -> None:
    folder = resources.files("reelforge.api") / "static" / "playground"
    names = {entry.name for entry in folder.iterdir()} - {"index.html"}
    assert names == set(playground_files())
    for name in names:
        assert service.client.get(f"/playground/{name}").status_code == 200


def test_models_carry_the_rules_the_page_checks_by(service: Api) -> None:
    rules = service.client.get("/v2/models").json()["rules"]
    assert rules["durations_by_resolution"] == {"768P": [6, 10], "1080P": [6]}
    assert rules["camera_commands"] == [movement.value for movement in Movement]
    assert len(rules["camera_commands"]) == 15
    assert rules["image"]["max_bytes"] == MAX_IMAGE_BYTES
    assert rules["image"]["min_short_side"] == MIN_IMAGE_SHORT_SIDE


# --- in a browser --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium for the module (skipped, or failed under REELFORGE_REQUIRE_BROWSER=1,
    where chromium or playwright is missing)."""
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "needs playwright (pip install playwright)"
    if CHROMIUM is None:
        reason = "needs a chromium binary (apt-get install chromium)"
    if reason is not None:
        if REQUIRED:
            pytest.fail(f"REELFORGE_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def page(browser: Any, service: Api) -> Iterator[Any]:
    """The playground in a fresh context that may reach only this server; console errors
    and page errors (a CSP refusal among them) are collected in ``page.problems``."""
    context = browser.new_context(viewport=DESKTOP)
    opened = context.new_page()
    problems: list[str] = []
    outside: list[str] = []

    def only_this_server(route: Any) -> None:
        if route.request.url.startswith(service.base_url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    opened.route("**/*", only_this_server)
    opened.on("pageerror", lambda error: problems.append(str(error)))
    opened.on(
        "console",
        lambda message: (
            problems.append(f"{message.text} {message.location}")
            if message.type == "error" and STREAM not in str(message.location)
            else None
        ),
    )
    opened.goto(f"{service.base_url}/")
    opened.get_by_test_id("api-key").fill(TEST_KEY)
    opened.get_by_test_id("api-key").press("Tab")
    opened.wait_for_function("() => document.querySelectorAll('#model option').length > 0")
    opened.problems = problems
    yield opened
    context.close()
    assert outside == []


def _image_file(path: Path, image: Image.Image) -> Path:
    path.write_bytes(encoded(image))
    return path


FIRST_FRAME_MATCH = """() => {
  const video = document.querySelector('[data-testid=video]');
  const picked = document.querySelector('#first-frame-field img');
  const measure = (flip) => {
    const w = video.videoWidth, h = video.videoHeight;
    const a = new OffscreenCanvas(w, h).getContext('2d');
    a.drawImage(video, 0, 0, w, h);
    const b = new OffscreenCanvas(w, h).getContext('2d');
    if (flip) { b.translate(w, 0); b.scale(-1, 1); }
    b.drawImage(picked, 0, 0, w, h);
    const x = a.getImageData(0, 0, w, h).data, y = b.getImageData(0, 0, w, h).data;
    let total = 0;
    for (let i = 0; i < x.length; i += 4)
      for (let c = 0; c < 3; c++) total += Math.abs(x[i + c] - y[i + c]);
    return total / (x.length / 4 * 3);
  };
  return {same: measure(false), flipped: measure(true), duration: video.duration,
          width: video.videoWidth, height: video.videoHeight};
}"""
"""Mean absolute difference (0..255 per channel) of the video's current frame from the picked
image, and from the image mirrored (a control the measure must tell apart)."""


def test_a_generation_from_key_to_played_video(
    page: Any, service: Api, tmp_path: Path, screenshots: Path
) -> None:
    frame = _image_file(tmp_path / "first.png", textured(640, 480, seed=7))
    page.get_by_test_id("prompt").fill("A quiet harbour at dawn")
    page.get_by_role("button", name="Insert camera command Pan left").click()
    assert page.get_by_test_id("prompt").input_value() == "A quiet harbour at dawn [Pan left]"
    page.get_by_test_id("first-frame").set_input_files(str(frame))
    page.wait_for_selector("#first-frame-field img:not([hidden])")
    page.get_by_test_id("enhance-prompt").uncheck()
    page.get_by_test_id("generate").click()

    page.wait_for_function(
        "() => document.querySelector('[data-testid=status]').dataset.state === 'completed'",
        timeout=60_000,
    )
    assert page.get_by_test_id("progress").get_attribute("value") == "100"
    page.wait_for_function("() => document.querySelector('[data-testid=video]').readyState >= 2")
    seen = page.evaluate(FIRST_FRAME_MATCH)
    assert seen["duration"] == pytest.approx(6.0, abs=0.05)
    assert (seen["width"], seen["height"]) == (1024, 768)  # the image's aspect, 768 short side
    assert seen["same"] < 8, seen
    assert seen["flipped"] > 3 * seen["same"], seen

    item = page.locator("[data-testid=history] li").first
    item.locator(".state.completed").wait_for()
    newest = service.client.get(UNIFIED, params={"limit": 1}).json()["data"][0]
    assert item.get_attribute("data-generation-id") == newest["id"]
    page.wait_for_function(
        "() => document.querySelector('[data-testid=history] li img')?.naturalWidth > 0"
    )
    page.wait_for_function("() => document.querySelector('[data-testid=video]').readyState >= 4")
    page.wait_for_timeout(1000)  # the controls' loading spinner fades out
    page.screenshot(path=str(screenshots / "desktop.png"), full_page=True)
    page.set_viewport_size(PHONE)
    page.wait_for_timeout(500)
    page.screenshot(path=str(screenshots / "phone.png"), full_page=True)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
    page.set_viewport_size(DESKTOP)

    page.get_by_test_id("prompt").fill("")
    page.get_by_test_id("resolution").select_option("1080P")
    item.get_by_role("button", name=re.compile("^Re-run")).click()
    page.wait_for_function("() => document.querySelector('[data-testid=prompt]').value !== ''")
    assert page.get_by_test_id("prompt").input_value() == "A quiet harbour at dawn [Pan left]"
    assert page.get_by_test_id("resolution").input_value() == "768P"
    assert page.get_by_test_id("duration").input_value() == "6"
    assert page.problems == []


@pytest.mark.parametrize(
    "image",
    [textured(300, 600), textured(1200, 400)],
    ids=["short side of 300 px", "ratio 3:1"],
)
def test_an_invalid_frame_is_refused_at_the_field_in_the_apis_words(
    page: Any, service: Api, tmp_path: Path, image: Image.Image, screenshots: Path
) -> None:
    path = _image_file(tmp_path / "bad.png", image)
    page.get_by_test_id("first-frame").set_input_files(str(path))
    error = page.locator("#first-frame-field [data-testid=error]")
    error.wait_for()
    refused = service.create(
        {"model": "minimax/hailuo-02", "prompt": "x", "image_url": _data_uri(path)}, UNIFIED
    )
    assert refused.status_code == 400
    assert error.inner_text() == refused.json()["error"]["message"]
    page.screenshot(path=str(screenshots / f"refused-{image.width}x{image.height}.png"))
    assert page.get_by_test_id("first-frame").get_attribute("aria-invalid") == "true"
    page.locator("#first-frame-field .clear").click()
    error.wait_for(state="hidden")  # removing the image takes its error away
    assert page.problems == []


def test_only_the_lengths_a_resolution_allows_are_offered(page: Any) -> None:
    page.get_by_test_id("resolution").select_option("768P")
    assert _options(page, "duration") == ["6", "10"]
    page.get_by_test_id("resolution").select_option("1080P")
    assert _options(page, "duration") == ["6"]


def test_a_frame_can_be_dropped_on_its_field(page: Any) -> None:
    page.evaluate(DROP_IMAGE, "last-frame")
    page.wait_for_selector("#last-frame-field img:not([hidden])")
    assert page.evaluate("() => document.querySelector('#last-frame').files[0].name") == "drop.png"
    page.locator("#last-frame-field .clear").click()
    assert page.evaluate("() => document.querySelector('#last-frame').files.length") == 0


DROP_IMAGE = """async (id) => {
  const canvas = new OffscreenCanvas(640, 480);
  canvas.getContext('2d').fillRect(0, 0, 320, 240);
  const file = new File([await canvas.convertToBlob()], 'drop.png', {type: 'image/png'});
  const carried = new DataTransfer();
  carried.items.add(file);
  const zone = document.getElementById(id).closest('.drop');
  zone.dispatchEvent(new DragEvent('drop', {dataTransfer: carried, bubbles: true}));
}"""
"""Drop a 640x480 PNG made in the page on the drop zone of the input ``id``."""


def test_an_api_refusal_is_shown_at_the_field_it_names(page: Any, service: Api) -> None:
    assert page.get_by_test_id("prompt").get_attribute("maxlength") == "2000"  # from the rules
    page.evaluate(
        "() => document.querySelector('[data-testid=prompt]').removeAttribute('maxlength')"
    )
    page.get_by_test_id("prompt").fill("x" * 2001)
    page.get_by_test_id("generate").click()
    error = page.locator("#prompt-field [data-testid=error]")
    error.wait_for()
    refused = service.create({"model": "minimax/hailuo-02", "prompt": "x" * 2001}, UNIFIED)
    assert error.inner_text() == refused.json()["error"]["message"]
    assert error.inner_text().startswith("prompt: ")


def test_queue_position_and_eta_from_the_event_stream_are_shown(page: Any) -> None:
    """Where the server streams events, the page shows what they say (here a stream that
    says the job is second in the queue, then ends), then polls to the end."""
    event = {"id": "x", "status": "queued", "progress": 0, "queue_position": 2, "eta_seconds": 41}
    page.route(
        f"**{STREAM}*",
        lambda route: route.fulfill(
            status=200,
            headers={"Content-Type": "text/event-stream"},
            body=f": hello\n\nevent: status\ndata: {json.dumps(event)}\n\n",
        ),
    )
    page.evaluate(STATUS_LOG)
    page.get_by_test_id("first-frame").set_input_files([])
    page.get_by_test_id("prompt").fill("A red kite over a hill")
    page.get_by_test_id("generate").click()
    page.wait_for_function(
        "() => document.querySelector('[data-testid=status]').dataset.state === 'completed'",
        timeout=60_000,
    )
    page.unroute(f"**{STREAM}*")
    seen: list[str] = page.evaluate("() => window.statusLog")
    assert "Status: queued · queue position 2 · about 41 s left" in seen
    assert seen[-1] == "Status: completed"


STATUS_LOG = """() => {
  window.statusLog = [];
  const status = document.querySelector('[data-testid=status]');
  new MutationObserver(() => window.statusLog.push(status.textContent))
    .observe(status, {childList: true, characterData: true, subtree: true});
}"""
"""Record every text the status element shows, in ``window.statusLog``."""


def test_a_wrong_key_is_refused_at_the_key_field(
    browser: Any, service: Api, screenshots: Path
) -> None:
    context = browser.new_context(viewport=PHONE)
    page = context.new_page()
    page.goto(f"{service.base_url}/")
    assert page.get_by_test_id("status").inner_text() == "Enter your API key to start."
    page.get_by_test_id("api-key").fill("rf_not-a-key")
    page.get_by_test_id("api-key").press("Enter")
    error = page.locator(".key [data-testid=error]")
    error.wait_for()
    refused = service.client.get("/v2/models", headers={"Authorization": "Bearer rf_not-a-key"})
    assert error.inner_text() == refused.json()["error"]["message"]
    assert page.evaluate("() => localStorage.getItem('reelforge.apiKey')") == "rf_not-a-key"
    page.screenshot(path=str(screenshots / "phone-key-refused.png"))
    context.close()


def _options(page: Any, testid: str) -> list[str]:
    values: list[str] = page.eval_on_selector_all(
        f"[data-testid={testid}] option", "options => options.map(o => o.value)"
    )
    return values


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("REELFORGE_SCREENSHOT_DIR")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path
