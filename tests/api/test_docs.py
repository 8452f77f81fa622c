"""The docs pages work offline: their scripts and styles come from this server, and they
render in a real browser that may reach nothing else, under the pages' strict CSP."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from tests.service import Api, running_api, service_settings

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REDOC_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"
"""ReDoc's "powered by" image: the CSP blocks it, nothing else is missing without it."""


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api(service_settings(tmp_path_factory.mktemp("docs"))) as live:
        yield live


@pytest.mark.parametrize(
    ("path", "scripts"),
    [
        ("/docs", ["/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-init.js"]),
        ("/redoc", ["/docs/assets/redoc.standalone.js"]),
    ],
)
def test_the_pages_load_their_scripts_from_this_server(
    api: Api, path: str, scripts: list[str]
) -> None:
    page = api.client.get(path).text
    assert "http://" not in page  # no CDN
    assert "https://" not in page
    assert "<script>" not in page  # no inline script (the CSP would block it)
    for script in scripts:
        assert f'src="{script}"' in page
        answer = api.client.get(script)
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/javascript")
        assert len(answer.content) > 100


def test_an_unlisted_asset_is_404(api: Api) -> None:
    for name in ("nothing.js", "..%2Fdocs.py", "core.py"):
        assert api.client.get(f"/docs/assets/{name}").status_code == 404


@pytest.mark.skipif(CHROMIUM is None, reason="needs a chromium binary")
def test_both_pages_render_in_a_browser_that_reaches_nothing_else(api: Api) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    problems: list[str] = []
    outside: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()

        def only_this_server(route: object) -> None:
            url: str = route.request.url  # type: ignore[attr-defined]
            if url.startswith(api.base_url):
                route.continue_()  # type: ignore[attr-defined]
            else:
                outside.append(url)
                route.abort()  # type: ignore[attr-defined]

        page.route("**/*", only_this_server)
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on(
            "console",
            lambda message: (
                problems.append(message.text)
                if message.type == "error" and REDOC_LOGO not in message.text
                else None
            ),
        )
        page.goto(f"{api.base_url}/docs")
        page.wait_for_selector(".opblock", timeout=20_000)
        assert page.locator(".opblock").count() >= 10  # every documented operation
        assert page.locator(".btn.authorize").count() == 1  # the bearer scheme
        page.goto(f"{api.base_url}/redoc")
        page.wait_for_selector("[data-section-id^='operation/']", timeout=20_000)
        browser.close()
    assert problems == []
    assert outside == []
