"""The subscriber pages in a real browser: Debian's headless Chromium, driven by Playwright,
against `digest web`'s app served by uvicorn on 127.0.0.1.

Screenshots of each step are saved under test-artifacts/ for people to look at.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import uvicorn
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright
from sqlalchemy import select
from sqlalchemy.engine import Engine

from digest.config import Settings, get_settings
from digest.db import get_engine, upgrade
from digest.links import Links
from digest.models import Subscriber
from digest.send.base import EmailBackend
from digest.send.memory import MemoryBackend
from digest.web.app import create_app
from tests.support.browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from tests.support.signup_mail import confirmation_links
from tests.support.web_rows import make_subscriber, make_tool, status_of, subscriber_row

pytestmark = pytest.mark.browser


@dataclass
class LiveSite:
    settings: Settings
    engine: Engine
    outbox: MemoryBackend  # what the app "sent"


@pytest.fixture
def live_site(monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveSite]:
    """The app under uvicorn on a free loopback port, its links pointing at that port."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    monkeypatch.setenv("DIGEST_SITE_URL", f"http://127.0.0.1:{port}")
    get_settings.cache_clear()
    settings = get_settings()
    upgrade(settings.database_url)
    outbox = MemoryBackend()

    def recording(settings: Settings, *, interactive: bool = False) -> EmailBackend:
        return outbox

    app = create_app(settings, backend_factory=recording)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield LiveSite(settings, get_engine(settings.database_url), outbox)
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
    context = browser.new_context(viewport={"width": 720, "height": 800})
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
    page.screenshot(path=str(ARTIFACTS / f"web-{name}.png"), full_page=True)


def assert_styled(page: Page) -> None:
    """The inline stylesheet was allowed by the page's CSP hash and applied."""
    radius = page.evaluate("() => getComputedStyle(document.querySelector('.card')).borderRadius")
    assert radius == "14px"


def test_a_person_unsubscribes_and_comes_back_by_clicking(live_site: LiveSite, page: Page) -> None:
    # Opening the link changes nothing; the button unsubscribes; the next button re-subscribes.
    sid = make_subscriber(live_site.engine, "ada@example.com")
    page.goto(Links.from_settings(live_site.settings).unsubscribe(sid))
    page.get_by_role("heading", name="Unsubscribe from Verdict Digest?").wait_for()
    assert_styled(page)
    assert status_of(live_site.engine, sid) == "active"
    shoot(page, "unsubscribe-1-ask")

    page.get_by_role("button", name="Unsubscribe").click()
    page.get_by_text("You are unsubscribed.").wait_for()
    assert status_of(live_site.engine, sid) == "unsubscribed"
    shoot(page, "unsubscribe-2-done")

    page.get_by_role("button", name="Re-subscribe").click()
    page.get_by_role("heading", name="Welcome back").wait_for()
    assert status_of(live_site.engine, sid) == "active"
    shoot(page, "unsubscribe-3-back")


def test_a_person_picks_categories_and_saves(live_site: LiveSite, page: Page) -> None:
    # Ticking boxes and saving stores exactly those categories for the next digest.
    for slug, category in [("a", "Developer Tools"), ("b", "Writing"), ("c", "Image & Video")]:
        make_tool(live_site.engine, slug, category)
    sid = make_subscriber(live_site.engine, "grace@example.com")
    page.goto(Links.from_settings(live_site.settings).preferences(sid))
    page.get_by_role("heading", name="Your Verdict Digest preferences").wait_for()
    assert_styled(page)
    shoot(page, "preferences-1-open")

    page.get_by_label("Writing").check()
    page.get_by_label("Image & Video").check()
    page.get_by_role("button", name="Save preferences").click()
    page.get_by_text("Saved.").wait_for()
    assert page.get_by_label("Writing").is_checked()
    assert not page.get_by_label("Developer Tools").is_checked()
    assert subscriber_row(live_site.engine, sid)["categories"] == ["Image & Video", "Writing"]
    shoot(page, "preferences-2-saved")


def test_a_person_signs_up_and_confirms_from_the_email(live_site: LiveSite, page: Page) -> None:
    # The form sends one confirmation email; its link's page has the button that activates it.
    make_tool(live_site.engine, "a", "Writing")
    page.goto(f"{live_site.settings.site_url}/subscribe")
    assert_styled(page)
    page.get_by_label("Email address").fill("lin@example.com")
    page.get_by_label("Writing").check()
    shoot(page, "signup-1-form")
    page.get_by_role("button", name="Subscribe").click()
    page.get_by_role("heading", name="Check your inbox").wait_for()
    shoot(page, "signup-2-sent")

    deadline = time.monotonic() + 10  # the mail goes from the app's worker, just after the page
    while not live_site.outbox.sent and time.monotonic() < deadline:
        time.sleep(0.05)
    [message] = live_site.outbox.sent
    html_part = message.get_body(preferencelist=("html",))
    assert html_part is not None
    # The email opens in a blank tab of its own, outside the site's CSP, as a mail client shows it.
    mail = page.context.new_page()
    mail.set_content(html_part.get_content())
    shoot(mail, "signup-3-email")
    mail.close()
    [link] = confirmation_links([message], live_site.settings.site_url)
    assert link.startswith(live_site.settings.site_url)
    page.goto(link)
    page.get_by_role("button", name="Yes, subscribe me").click()  # a GET alone confirms nobody
    page.get_by_role("heading", name="You are subscribed").wait_for()
    shoot(page, "signup-4-confirmed")
    with live_site.engine.begin() as connection:
        subscriber_id = connection.execute(
            select(Subscriber.__table__.c.id).where(  # type: ignore[attr-defined]
                Subscriber.__table__.c.email_key == "lin@example.com"  # type: ignore[attr-defined]
            )
        ).scalar_one()
    row = subscriber_row(live_site.engine, subscriber_id)
    assert (row["status"], row["categories"], row["consent_ip"]) == (
        "active",
        ["Writing"],
        "127.0.0.1",
    )
