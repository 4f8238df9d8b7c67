"""The live preview (`digest preview --serve`) in Debian's headless Chromium: an editor's note
added with `digest edit` while the page is open appears on it by itself, escaped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from digest.cli.preview import preview_bundle
from digest.config import get_settings
from digest.db import upgrade
from digest.preview.server import start_preview
from digest.weeks import IsoWeek
from tests.support.browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from tests.support.cli import run_digest
from tests.support.scenario import WEEK, seed

pytestmark = pytest.mark.browser


def test_an_intro_added_while_the_live_preview_is_open_shows_on_it(tmp_path: Path) -> None:
    # The editor keeps the page open, runs `digest edit --intro`, and sees the note appear.
    settings = get_settings()
    upgrade(settings.database_url)
    seed(settings, tmp_path)
    week = IsoWeek.parse(WEEK)
    env = {
        "DIGEST_DATABASE_URL": os.environ["DIGEST_DATABASE_URL"],
        "DIGEST_SECRET_KEY": os.environ["DIGEST_SECRET_KEY"],
    }
    note = "A <i>note</i> from the desk.\n\nSecond thought."
    with (
        start_preview(lambda: preview_bundle(settings, week, None)) as server,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.goto(server.url)
        email = page.frame_locator("#email")
        expect(email.locator("body")).to_contain_text("This week our panel weighed")
        assert email.locator(".vd-intro").count() == 0

        edited = run_digest("edit", "--week", WEEK, "--intro", note, cwd=tmp_path, env=env)
        assert edited.returncode == 0, edited.stderr

        # No reload by us: the page polls the rendering's fingerprint and reloads itself.
        intro = email.locator(".vd-intro")
        expect(intro).to_have_count(2, timeout=20_000)
        expect(intro.first).to_have_text("A <i>note</i> from the desk.")
        expect(intro.nth(1)).to_have_text("Second thought.")
        assert email.locator("i").count() == 0  # shown as text, never as markup
        expect(page.locator("pre")).to_contain_text("A <i>note</i> from the desk.")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "live-preview-with-intro.png"))
        browser.close()
