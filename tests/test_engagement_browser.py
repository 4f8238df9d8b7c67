"""Votes and the report in a real browser: Debian's headless Chromium, driven by Playwright.

A subscriber clicks Ship in the HTML of an email really sent, lands on `digest web` (uvicorn on
127.0.0.1), and only the button counts; the editor's report page opens from disk with the
network cut off and shows its plots. Screenshots go to test-artifacts/ for people to look at.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from playwright.sync_api import Browser, ConsoleMessage, Page, Route, sync_playwright
from starlette.testclient import TestClient
from typer.testing import CliRunner

from digest.cli import app as cli
from digest.config import Settings, get_settings
from digest.db import upgrade
from digest.web.app import create_app
from tests.support.browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from tests.support.engagement import answer_week
from tests.support.scenario import WEEK
from tests.support.sent_week import send_week
from tests.support.voting import votes
from tests.support.webhook_events import Signer

pytestmark = pytest.mark.browser


@pytest.fixture
def live_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """`digest web` under uvicorn on a free loopback port; the settings' links point at it."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    monkeypatch.setenv("DIGEST_SITE_URL", f"http://127.0.0.1:{listener.getsockname()[1]}")
    get_settings.cache_clear()
    settings = get_settings()
    upgrade(settings.database_url)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield settings
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    opened = context.new_page()
    problems: list[str] = []

    def watch(message: ConsoleMessage) -> None:
        # CSP violations and failed loads are reported on the console as errors.
        if message.type == "error":
            problems.append(message.text)

    opened.on("console", watch)
    yield opened
    context.close()
    assert problems == [], problems


def shoot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"votes-{name}.png"), full_page=True)


def test_a_subscriber_clicks_ship_in_a_sent_email_and_only_the_button_counts(
    live_settings: Settings, page: Page, tmp_path: Path
) -> None:
    # From the email to one page with one button: opening it counts nothing, pressing it does.
    week = send_week(live_settings, tmp_path)
    email = tmp_path / "email.html"
    email.write_text(week.html("reader0@example.com"), encoding="utf-8")
    page.goto(email.as_uri())
    page.locator('a[href*="/vote/"][href$="/code-llama-4?choice=ship"]').click()
    page.get_by_role("heading", name="Ship or skip Code Llama 4?").wait_for()
    assert page.locator("form").count() == 1 and page.locator("button").count() == 1
    assert votes(live_settings) == []
    page.reload()  # a second look, as a scanner or a reload would: still nothing
    assert votes(live_settings) == []
    shoot(page, "ask")
    page.get_by_role("button", name="Vote ship").click()
    page.get_by_role("heading", name="You voted ship on Code Llama 4").wait_for()
    assert "1 ship / 0 skip" in page.inner_text("main")
    assert votes(live_settings) == [("code-llama-4", "ship")]
    shoot(page, "counted")
    page.get_by_role("link", name="Vote skip instead").click()
    page.get_by_role("button", name="Vote skip").click()
    page.get_by_role("heading", name="You voted skip on Code Llama 4").wait_for()
    assert votes(live_settings) == [("code-llama-4", "skip")]
    page.get_by_role("link", name="Read the full comparison").click()
    page.get_by_role("heading", name="Code Llama 4").first.wait_for()


def test_the_report_page_opens_offline_and_shows_its_plots(
    live_settings: Settings, browser: Browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The editor opens the file with no network: nothing is requested, every plot is drawn.
    signer = Signer()
    monkeypatch.setenv("DIGEST_SENDGRID_WEBHOOK_PUBLIC_KEY", signer.public_key_b64)
    get_settings.cache_clear()
    settings = get_settings()
    with TestClient(create_app(settings), base_url=settings.site_url) as client:
        answer_week(client, signer, settings, send_week(settings, tmp_path))
    result = CliRunner().invoke(cli, ["report", "--week", WEEK, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    report = tmp_path / "out" / f"report-{WEEK}.html"
    context = browser.new_context(viewport={"width": 1100, "height": 900}, offline=True)
    requested: list[str] = []

    def refuse(route: Route) -> None:
        requested.append(route.request.url)
        if route.request.url.startswith(("file:", "data:")):
            route.continue_()
        else:
            route.abort()

    context.route("**/*", refuse)
    viewer = context.new_page()
    viewer.goto(report.as_uri())
    viewer.get_by_role("heading", name=f"{WEEK}:", exact=False).first.wait_for()
    plots = viewer.locator("figure img")
    assert plots.count() == 4
    for index in range(4):
        plot = plots.nth(index)
        plot.scroll_into_view_if_needed()
        drawn = plot.evaluate("img => img.complete && img.naturalWidth > 300")
        box = plot.bounding_box()
        assert drawn and box is not None and box["height"] > 150, index
    assert [url for url in requested if not url.startswith(("file:", "data:"))] == []
    assert "Opens are a floor" in viewer.inner_text("body")
    ARTIFACTS.mkdir(exist_ok=True)
    viewer.screenshot(path=str(ARTIFACTS / "engagement-report.png"), full_page=True)
    context.close()
