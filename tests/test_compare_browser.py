"""The compare page in a real browser: Debian's headless Chromium, driven by Playwright, against
`digest web`'s app served by uvicorn on 127.0.0.1. The screenshot goes to test-artifacts/.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import uvicorn
from playwright.sync_api import ConsoleMessage, sync_playwright
from sqlalchemy import insert

from digest.config import Settings, get_settings
from digest.content.frozen import ReviewCard
from digest.db import get_engine, upgrade
from digest.models import Digest
from digest.web.app import create_app
from tests.content_factories import make_content, make_pair, make_tool
from tests.support.browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.browser

# Each would set window.pwned if any of it ran as markup or script.
HOSTILE_NAME = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">Evil'
HOSTILE_QUOTE = '"><svg onload="window.pwned=3"></svg> It ships, <b>really</b>.'


@pytest.fixture
def site_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Settings, socket.socket]]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    monkeypatch.setenv("DIGEST_SITE_URL", f"http://127.0.0.1:{listener.getsockname()[1]}")
    get_settings.cache_clear()
    settings = get_settings()
    upgrade(settings.database_url)
    yield settings, listener
    listener.close()


@pytest.fixture
def live_url(site_settings: tuple[Settings, socket.socket]) -> Iterator[str]:
    """The app under uvicorn on a free loopback port."""
    settings, listener = site_settings
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield settings.site_url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def store_hostile_digest(settings: Settings) -> None:
    reviews = [
        ReviewCard(reviewer="Builder", verdict="ship", quote=HOSTILE_QUOTE, lens="DX", score=90),
        ReviewCard(reviewer="Skeptic", verdict="skip", quote="Too slow for us.", score=35),
    ]
    a = make_tool("evil-tool", name=HOSTILE_NAME, vendor=HOSTILE_NAME, reviews=reviews)
    b = make_tool("rival", name="Rival Tool", is_new=False, ship_share=0.4)
    pair = make_pair(0, a=a, b=b, compare_path="/compare/evil-tool-vs-rival")
    content = make_content(pairs=[pair], also_new=0).model_dump(mode="json")
    with get_engine(settings.database_url).begin() as connection:
        connection.execute(
            insert(Digest).values(
                week="2026-W47",
                subject="s",
                content=content,
                created_at=datetime.now(UTC),
                planned_at=datetime.now(UTC),
            )
        )


def test_the_compare_page_renders_both_tools_and_runs_no_catalog_script(
    site_settings: tuple[Settings, socket.socket], live_url: str
) -> None:
    # Both names and a reviewer quote are visible as text; nothing from the catalog executes.
    store_hostile_digest(site_settings[0])
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900})

        def watch(message: ConsoleMessage) -> None:
            if message.type == "error":
                problems.append(message.text)

        page.on("console", watch)
        response = page.goto(f"{live_url}/compare/evil-tool-vs-rival")
        assert response is not None and response.status == 200
        page.get_by_role("heading", name="Rival Tool", exact=True).wait_for()
        assert page.get_by_role("heading", name=HOSTILE_NAME, exact=True).is_visible()
        assert page.get_by_text("It ships, <b>really</b>.", exact=False).is_visible()
        assert page.get_by_text("Too slow for us.").is_visible()
        assert page.evaluate("() => window.pwned") is None
        assert page.evaluate("() => document.querySelectorAll('script, svg, img').length") == 0
        columns = page.evaluate(
            "() => getComputedStyle(document.querySelector('.versus')).gridTemplateColumns"
        )
        assert len(columns.split()) == 2, columns  # side by side: the stylesheet applied
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "web-compare.png"), full_page=True)
        browser.close()
    assert problems == [], problems
