"""Readers' Ship/Skip votes through `digest web`, from the links of really sent emails, on a real
database (SQLite and PostgreSQL).

A week is composed, planned and sent by a sender lane through the recording backend; each test
follows the links of the messages subscribers got, with Starlette's TestClient against the app
`digest web` serves.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select, update
from starlette.testclient import TestClient

from digest.config import Settings
from digest.links import Links
from digest.models import DELIVERY_TABLE, DIGEST_TABLE, VISIT_TABLE
from digest.preview.rendering import build_preview
from digest.tokens import Purpose, make_token
from digest.web.app import create_app
from digest.weeks import IsoWeek
from tests.support.scenario import WEEK
from tests.support.sent_week import NEXT_WEEK, SentWeek, next_week_tools, send_week
from tests.support.voting import engine_of, open_link, path_of, press, votes

READER = "reader0@example.com"
WRITER = "writer@example.com"  # a Writing-only subscriber


@pytest.fixture
def week(settings: Settings, tmp_path: Path) -> SentWeek:
    return send_week(settings, tmp_path)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), base_url=settings.site_url) as opened:
        yield opened


def test_opening_a_vote_link_counts_nothing_and_its_one_button_counts_one_vote(
    settings: Settings, week: SentWeek, client: TestClient
) -> None:
    # GET shows the tool and exactly one form with one button; only its POST stores the vote.
    link = week.vote_link(READER, "code-llama-4", "ship")
    status, page, csrf = open_link(client, link)
    assert status == 200 and csrf is not None
    assert page.count("<form") == 1 and page.count("<button") == 1
    assert "Ship or skip Code Llama 4?" in page and "Vote ship" in page
    assert votes(settings) == []
    status, thanks = press(client, link)
    assert status == 200
    assert "You voted ship on Code Llama 4" in thanks
    assert "100% ship" in thanks and "1 ship / 0 skip" in thanks
    assert 'href="/compare/code-llama-4-vs-' in thanks  # back to the comparison it stood in
    assert votes(settings) == [("code-llama-4", "ship")]


def test_a_later_vote_replaces_the_earlier_one(
    settings: Settings, week: SentWeek, client: TestClient
) -> None:
    # One vote per subscriber and tool: Skip after Ship leaves one skip, and the page says so.
    press(client, week.vote_link(READER, "code-llama-4", "ship"))
    status, _page, _csrf = open_link(client, week.vote_link(READER, "code-llama-4", "skip"))
    assert status == 200
    assert "Your vote so far: <strong>ship</strong>" in _page
    status, thanks = press(client, week.vote_link(READER, "code-llama-4", "skip"))
    assert status == 200 and "0 ship / 1 skip" in thanks
    assert votes(settings) == [("code-llama-4", "skip")]
    press(client, week.vote_link("reader1@example.com", "code-llama-4", "ship"))
    assert votes(settings) == [("code-llama-4", "ship"), ("code-llama-4", "skip")]


def test_a_scanner_opening_every_link_of_every_email_votes_for_nothing(
    settings: Settings, week: SentWeek, client: TestClient
) -> None:
    # Corporate link scanners GET (and HEAD) every link of every message: not one vote counts.
    site = settings.site_url
    links = {link for address in week.messages for link in week.links(address)}
    ours = sorted(link for link in links if link.startswith(site + "/"))
    assert sum("/vote/" in link for link in ours) >= 2 * 6 * 4
    for link in ours:
        assert client.get(path_of(link)).status_code == 200, link
        assert client.head(path_of(link)).status_code == 200, link
    assert votes(settings) == []
    with engine_of(settings).connect() as connection:
        visits = connection.execute(select(func.count()).select_from(VISIT_TABLE)).scalar_one()
    assert visits > 0  # opening a link is a click, counted once per reader and link


def test_a_forged_or_altered_token_counts_nothing(
    settings: Settings, week: SentWeek, client: TestClient
) -> None:
    # A changed signature, someone else's delivery id, a token of another purpose: 400, no vote.
    link = week.vote_link(READER, "code-llama-4", "ship")
    token = urlsplit(link).path.split("/")[2]
    payload, _, signature = token.partition(".")
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    key = settings.signing_key()
    other = Links.from_settings(settings).vote_token(999)
    forged = {
        f"{payload}.{flipped}",
        f"{other.partition('.')[0]}.{signature}",
        make_token(key, Purpose.UNSUBSCRIBE, 1),
        make_token(b"another-key-entirely-0123456789", Purpose.VOTE, 1),
        "x" * 300,
    }
    for bad in forged:
        path = f"/vote/{bad}/code-llama-4"
        assert client.get(path + "?choice=ship").status_code == 400, bad
        assert client.post(path, data={"choice": "ship", "csrf": "x.y"}).status_code == 400, bad
    assert votes(settings) == []


def test_a_tool_not_in_the_subscribers_email_cannot_be_voted_on(
    settings: Settings, week: SentWeek, client: TestClient
) -> None:
    # The Writing-only subscriber's email has no developer tool; an unknown slug is no tool.
    own = week.vote_link(WRITER, "inkwell", "ship")
    foreign = own.replace("/inkwell?", "/code-llama-4?")
    for link in (foreign, own.replace("/inkwell?", "/no-such-tool?")):
        assert client.get(path_of(link)).status_code == 404
    csrf = open_link(client, own)[2]
    answer = client.post(urlsplit(foreign).path, data={"csrf": csrf, "choice": "ship"})
    assert answer.status_code == 404
    assert votes(settings) == []
    assert press(client, own)[0] == 200
    assert votes(settings) == [("inkwell", "ship")]


def test_a_token_from_another_week_cannot_vote_on_that_weeks_tools(
    settings: Settings, week: SentWeek, client: TestClient, tmp_path: Path
) -> None:
    # Last week's email votes on last week's tools only, not on the next week's.
    later = send_week(settings, tmp_path, week=NEXT_WEEK, tools=next_week_tools())
    old_link = week.vote_link(READER, "code-llama-4", "ship")
    crossed = old_link.replace("/code-llama-4?", "/gitgenie?")
    assert client.get(path_of(crossed)).status_code == 404
    csrf = open_link(client, old_link)[2]
    answer = client.post(urlsplit(crossed).path, data={"csrf": csrf, "choice": "ship"})
    assert answer.status_code == 404
    assert votes(settings) == []
    assert press(client, later.vote_link(READER, "gitgenie", "skip"))[0] == 200
    assert votes(settings) == [("gitgenie", "skip")]


def test_a_vote_after_unsubscribing_still_counts_for_that_weeks_email(
    settings: Settings, week: SentWeek, client: TestClient
) -> None:
    # The reader read the email: leaving the list does not take their say on it away.
    unsubscribe = next(link for link in week.links(READER) if "/unsubscribe/" in link)
    one_click = client.post(path_of(unsubscribe), data={"List-Unsubscribe": "One-Click"})
    assert one_click.status_code == 200
    assert press(client, week.vote_link(READER, "patchpilot", "skip"))[0] == 200
    assert votes(settings) == [("patchpilot", "skip")]


def test_the_vote_form_needs_its_own_csrf_value(
    settings: Settings, week: SentWeek, client: TestClient
) -> None:
    # A page on another site can neither read the field nor set the cookie: 403, nothing counted.
    link = week.vote_link(READER, "code-llama-4", "ship")
    path = urlsplit(link).path
    assert client.post(path, data={"choice": "ship"}).status_code == 403
    # Another email's form: the value is bound to the email's own token.
    other_csrf = open_link(client, week.vote_link("reader1@example.com", "code-llama-4"))[2]
    assert client.post(path, data={"choice": "ship", "csrf": other_csrf}).status_code == 403
    csrf = open_link(client, link)[2]
    client.cookies.clear()
    assert client.post(path, data={"choice": "ship", "csrf": csrf}).status_code == 403
    assert votes(settings) == []
    bad_choice = open_link(client, link)[2]
    assert client.post(path, data={"choice": "maybe", "csrf": bad_choice}).status_code == 400
    assert votes(settings) == []


def test_a_link_without_a_choice_offers_both_in_one_form(
    settings: Settings, week: SentWeek, client: TestClient
) -> None:
    # A link cut short at the "?" still shows the page: one form, a Ship and a Skip button.
    link = week.vote_link(READER, "code-llama-4", "ship").split("?")[0]
    status, page, csrf = open_link(client, link)
    assert status == 200 and page.count("<form") == 1 and page.count("<button") == 2
    answer = client.post(urlsplit(link).path, data={"csrf": csrf, "choice": "skip"})
    assert answer.status_code == 200
    assert votes(settings) == [("code-llama-4", "skip")]


def test_links_of_the_archive_and_of_a_preview_cannot_vote(
    settings: Settings, week: SentWeek, client: TestClient
) -> None:
    # The public archive and an editor's preview carry no one's token: their links say so.
    archived = client.get(f"/archive/{WEEK}").text
    archive_votes = sorted(set(re.findall(r'href="([^"]*/vote/[^"]+)"', archived)))
    preview = build_preview(settings, IsoWeek.parse(WEEK))
    preview_votes = sorted(set(re.findall(r'href="([^"]*/vote/[^"]+)"', preview.html)))
    assert archive_votes and preview_votes
    for link in [*archive_votes, *preview_votes]:
        link = link.replace("&amp;", "&")
        page = client.get(path_of(link))
        assert page.status_code == 200, link
        assert "cannot vote" in page.text and "<form" not in page.text
        assert client.post(urlsplit(link).path, data={"choice": "ship"}).status_code == 403
    assert votes(settings) == []


def test_an_email_that_never_went_out_cannot_vote(
    settings: Settings, week: SentWeek, client: TestClient
) -> None:
    # A row the provider refused holds no email: its token names nothing to vote from.
    link = week.vote_link(READER, "code-llama-4", "ship")
    token = urlsplit(link).path.split("/")[2]
    with engine_of(settings).begin() as connection:
        delivery_id = int(
            connection.execute(
                select(DELIVERY_TABLE.c.id).where(DELIVERY_TABLE.c.email == READER)
            ).scalar_one()
        )
        connection.execute(
            update(DELIVERY_TABLE).where(DELIVERY_TABLE.c.id == delivery_id).values(state="failed")
        )
    assert token == Links.from_settings(settings).vote_token(delivery_id)
    assert client.get(path_of(link)).status_code == 404
    assert votes(settings) == []


def test_catalog_text_on_the_vote_page_is_escaped(
    settings: Settings, week: SentWeek, client: TestClient
) -> None:
    # The page shows the email's tool name and tagline: as text, never as markup.
    hostile = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
    with engine_of(settings).begin() as connection:
        document = connection.execute(
            select(DIGEST_TABLE.c.content).where(DIGEST_TABLE.c.id == week.digest_id)
        ).scalar_one()
        document["pairs"][0]["a"]["tagline"] = hostile
        document["pairs"][0]["a"]["name"] = hostile
        connection.execute(
            update(DIGEST_TABLE).where(DIGEST_TABLE.c.id == week.digest_id).values(content=document)
        )
    slug = document["pairs"][0]["a"]["slug"]
    page = client.get(path_of(week.vote_link(READER, slug, "ship"))).text
    assert "<script>alert(1)" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
