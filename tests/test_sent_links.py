"""Every link of a sent digest opens a page of `digest web`: the weekly flow sends through the
outbox backend, then each message's HTML hrefs and text-part URLs under DIGEST_SITE_URL are
requested from the app (Starlette's TestClient), as a subscriber's click would be.
"""

from __future__ import annotations

import re
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from digest.config import get_settings
from digest.run.outcome import RunSummary
from digest.web.app import create_app
from flows.weekly_digest import weekly_digest
from tests.support.scenario import WEEK, seed

pytestmark = pytest.mark.usefixtures("prefect_harness")

_HREF = re.compile(r'href="([^"]+)"')
_TEXT_URL = re.compile(r"https?://[^\s<>\"]+")


def message_links(message: EmailMessage, site_url: str) -> set[str]:
    """The message's links under the site: every href of the HTML part, every URL of the text."""
    html_part = message.get_body(("html",))
    text_part = message.get_body(("plain",))
    assert html_part is not None and text_part is not None
    found = {link.replace("&amp;", "&") for link in _HREF.findall(html_part.get_content())}
    found |= set(_TEXT_URL.findall(text_part.get_content()))
    return {link for link in found if link.startswith(site_url + "/")}


def test_every_link_of_every_sent_message_opens_a_page(settings: object, tmp_path: Path) -> None:
    # No "Read the full comparison", archive, preferences or unsubscribe link ends in a 4xx/5xx.
    the_settings = get_settings()
    seed(the_settings, tmp_path)
    summary = weekly_digest(week=WEEK)
    assert isinstance(summary, RunSummary) and summary.counts == {"sent": 6}
    files = sorted((tmp_path / "outbox" / WEEK).glob("*.eml"))
    messages = [message_from_bytes(f.read_bytes(), policy=policy.default) for f in files]
    site = the_settings.site_url.rstrip("/")
    links = {link for message in messages for link in message_links(message, site)}
    kinds = {link[len(site) :].split("/")[1] for link in links}
    assert {"compare", "archive", "preferences", "unsubscribe"} <= kinds, kinds
    with TestClient(create_app(the_settings), base_url=site, follow_redirects=False) as client:
        answers = {link: client.get(link[len(site) :]).status_code for link in sorted(links)}
    assert {link: code for link, code in answers.items() if code >= 400} == {}
    assert set(answers.values()) == {200}
