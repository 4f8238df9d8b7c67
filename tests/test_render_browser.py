"""The rendered digest in a real browser: Debian's headless Chromium, driven by Playwright.

Screenshots of each width are saved under test-artifacts/ for people to look at.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from digest.render.placeholders import subscriber_substitutions
from digest.render.variant import render_variant
from digest.send.base import substitute
from tests.content_factories import ADDRESS, HOSTILE, SITE, make_content, make_pair, make_tool
from tests.support.browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def personalised(html: str) -> str:
    return substitute(
        html,
        subscriber_substitutions(
            unsubscribe_url=f"{SITE}/unsubscribe/tok-123",
            preferences_url=f"{SITE}/preferences/tok-456",
            name="Ada",
            vote_token="dm90ZTo0Mg.tok-789",
        ),
    )


def open_email(browser: Browser, html: str, width: int, requests: list[str] | None = None) -> Page:
    page = browser.new_page(viewport={"width": width, "height": 900})
    # Any request leaving the page would be an external resource: record and refuse it.
    seen = requests if requests is not None else []
    page.route("**/*", lambda route: (seen.append(route.request.url), route.abort()))
    page.set_content(html, wait_until="load")
    return page


def overflow(page: Page) -> tuple[int, int]:
    return page.evaluate("() => [document.scrollingElement.scrollWidth, window.innerWidth]")


@pytest.mark.parametrize("width", [375, 800])
def test_every_pair_is_visible_without_sideways_scrolling(browser: Browser, width: int) -> None:
    # On a phone and on a desktop the digest fits the screen and shows every head-to-head.
    content = make_content(pairs=8, also_new=3, categories=["Developer Tools"])
    rendered = render_variant(content, site_url=SITE, postal_address=ADDRESS)
    requests: list[str] = []
    page = open_email(browser, personalised(rendered.html), width, requests)
    try:
        scroll_width, inner_width = overflow(page)
        assert scroll_width <= inner_width
        for pair in content.pairs:
            heading = page.get_by_text(f"{pair.a.name} vs {pair.b.name}", exact=True)
            assert heading.is_visible()
            box = heading.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= inner_width
            # The link carries the reader's token (`?r=`), so digest web counts the visit.
            button = page.locator(f'a[href^="{SITE}{pair.compare_path}?r="]')
            assert button.is_visible()
        assert page.get_by_text("Hi Ada,").is_visible()
        assert page.locator(f'a[href="{SITE}/unsubscribe/tok-123"]').is_visible()
        assert requests == []
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"digest-{width}.png"), full_page=True)
    finally:
        page.close()


def test_tools_sit_side_by_side_on_desktop_and_stack_on_a_phone(browser: Browser) -> None:
    # The pair card compares two tools: next to each other when there is room, stacked if not.
    content = make_content(pairs=1, also_new=0)
    html = personalised(render_variant(content, site_url=SITE, postal_address=ADDRESS).html)
    pair = content.pairs[0]
    positions = {}
    for width in (375, 800):
        page = open_email(browser, html, width)
        try:
            a = page.locator(f'a[href="{pair.a.url}"]').bounding_box()
            b = page.locator(f'a[href="{pair.b.url}"]').bounding_box()
            assert a is not None and b is not None
            positions[width] = (a, b)
        finally:
            page.close()
    desk_a, desk_b = positions[800]
    assert abs(desk_a["y"] - desk_b["y"]) < 2 and desk_b["x"] > desk_a["x"] + 200
    phone_a, phone_b = positions[375]
    assert phone_b["y"] > phone_a["y"] + 100 and abs(phone_a["x"] - phone_b["x"]) < 2


def test_hostile_catalog_text_runs_nothing_in_a_browser(browser: Browser) -> None:
    # Escaping is proven where it matters: a real browser shows the text and runs no script.
    evil = " ".join(HOSTILE)
    pair = make_pair(0, a=make_tool("evil", name=evil, tagline=evil, quote=evil), verdict=evil)
    content = make_content(pairs=[pair], also_new=0, preheader=evil, subject=evil)
    html = personalised(render_variant(content, site_url=SITE, postal_address=evil).html)
    page = open_email(browser, html, 800)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    try:
        page.set_content(html, wait_until="load")
        page.mouse.move(200, 300)
        page.wait_for_timeout(200)
        assert dialogs == []
        assert page.evaluate("() => document.scripts.length") == 0
        shown = page.inner_text("body")
        assert "<script>alert(1)</script>" in shown and "<img src=x onerror=alert(1)>" in shown
    finally:
        page.close()
