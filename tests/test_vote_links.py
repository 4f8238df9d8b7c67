"""The email's Ship/Skip links and its own-page links: each subscriber's own, small enough for
SendGrid, kept out of click tracking, and counted as clicks by `digest web` when opened."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select, update
from starlette.testclient import TestClient

from digest.config import Settings
from digest.db import get_engine
from digest.delivery.building import recipient_for
from digest.delivery.ledger import ClaimedRecipient
from digest.links import Links
from digest.models import DELIVERY_TABLE, VISIT_TABLE
from digest.render.placeholders import subscriber_substitutions
from digest.render.variant import GMAIL_CLIP_BYTES, render_variant
from digest.send.base import OutgoingBatch, substitute
from digest.send.sendgrid_request import build_request_body
from digest.tokens import Purpose, make_token, read_token
from digest.web.access_log import redact_path
from digest.web.app import create_app
from tests.content_factories import ADDRESS, SITE, make_content
from tests.support.engagement import delivery_ids
from tests.support.sent_week import NEXT_WEEK, SentWeek, next_week_tools, send_week
from tests.support.voting import path_of

_ANCHOR = re.compile(r"<a\b([^>]*)>")
_HREF = re.compile(r'href="([^"]+)"')


@pytest.fixture
def week(settings: Settings, tmp_path: Path) -> SentWeek:
    return send_week(settings, tmp_path)


def test_every_tool_card_links_ship_and_skip_with_the_subscribers_own_token(
    settings: Settings, week: SentWeek
) -> None:
    # HTML and text, every tool of each one's email: /vote/<their delivery's token>/<slug>.
    ids = delivery_ids(settings, week.digest_id)
    key = settings.signing_key()
    for address, message_ids in ids.items():
        html_links = {link for link in week.links(address) if "/vote/" in link}
        text = week.text(address)
        tokens = {urlsplit(link).path.split("/")[2] for link in html_links}
        assert len(tokens) == 1, address
        (token,) = tokens
        assert read_token(key, Purpose.VOTE, token) == message_ids
        slugs = {urlsplit(link).path.split("/")[3] for link in html_links}
        for slug in slugs:
            for choice in ("ship", "skip"):
                link = f"{settings.site_url}/vote/{token}/{slug}?choice={choice}"
                assert link in html_links and link in text.split(), (address, link)
    assert (
        len(
            {
                urlsplit(link).path.split("/")[3]
                for link in week.links("writer@example.com")
                if "/vote/" in link
            }
        )
        == 2
    )  # the Writing pair only


def test_substitutions_stay_far_below_sendgrids_limit_in_a_big_week() -> None:
    # SendGrid takes at most 10,000 bytes of substitutions per personalization: one short token
    # per recipient, however many cards the week has (ten pairs and three new tools here).
    links = Links(site_url="https://verdicts.example.com", key=b"k" * 32)
    rendered = render_variant(
        make_content(pairs=10, also_new=3), site_url=SITE, postal_address=ADDRESS
    )
    claimed = ClaimedRecipient(2_000_000_000, 2_000_000_000, "ada@example.com", "Ada " * 20)
    recipient = recipient_for(links, claimed)
    batch = OutgoingBatch(
        digest_id=1,
        week="2026-W47",
        subject=rendered.subject,
        html=rendered.html,
        text=rendered.text,
        recipients=[recipient],
        from_email="digest@verdicts.example.com",
        from_name="Verdict Digest",
    )
    (personalization,) = build_request_body(batch)["personalizations"]
    size = len(json.dumps(personalization["substitutions"]).encode())
    assert size < 1_000, size
    assert rendered.html.count("%%vote_token%%") == 2 * 23 + 10 + 1


def test_a_ten_pair_week_with_real_tokens_filled_in_stays_under_gmails_clip() -> None:
    # The tokens are longer than their placeholders: the sent body, not the template, must fit.
    links = Links(site_url=SITE, key=b"k" * 32)
    content = make_content(pairs=10, also_new=3, categories=["Developer Tools"])
    rendered = render_variant(content, site_url=SITE, postal_address=ADDRESS)
    filled = substitute(
        rendered.html,
        subscriber_substitutions(
            unsubscribe_url=links.unsubscribe(2_000_000_000),
            preferences_url=links.preferences(2_000_000_000),
            name="Ada",
            vote_token=links.vote_token(2_000_000_000),
        ),
    )
    assert len(filled.encode("utf-8")) < GMAIL_CLIP_BYTES


def test_links_to_our_own_pages_stay_out_of_click_tracking_and_tool_links_do_not(
    settings: Settings, week: SentWeek
) -> None:
    # SendGrid honours clicktracking=off before the href: our links (votes, comparison, archive,
    # preferences, unsubscribe) go straight to us; a tool's own site is left to click tracking.
    html = week.html("reader0@example.com")
    anchors = _ANCHOR.findall(html)
    ours = [a for a in anchors if settings.site_url in a]
    elsewhere = [a for a in anchors if settings.site_url not in a]
    assert len(ours) >= 2 * 6 + 3 + 1 + 2 and elsewhere
    for attributes in ours:
        assert attributes.lstrip().startswith('clicktracking="off" href="'), attributes
    for attributes in elsewhere:
        assert "clicktracking" not in attributes, attributes
    hrefs = [href for attributes in ours for href in _HREF.findall(attributes)]
    kinds = {urlsplit(href).path.split("/")[1] for href in hrefs}
    assert kinds == {"vote", "compare", "archive", "preferences", "unsubscribe"}


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), base_url=settings.site_url) as opened:
        yield opened


def visits(settings: Settings) -> list[tuple[int, str, str]]:
    with get_engine(settings.database_url).connect() as connection:
        rows = connection.execute(
            select(VISIT_TABLE.c.delivery_id, VISIT_TABLE.c.kind, VISIT_TABLE.c.target)
        )
        return sorted((int(d), str(k), str(t)) for d, k, t in rows)


def test_opening_a_comparison_or_the_archive_from_the_email_counts_one_click(
    settings: Settings, week: SentWeek, client: TestClient
) -> None:
    # The reader's own ?r= names them: kept once however often they open it; a forged token, a
    # comparison that does not exist or a link without a token counts nothing.
    reader = delivery_ids(settings, week.digest_id)["reader0@example.com"]
    compare = next(link for link in week.links("reader0@example.com") if "/compare/" in link)
    archive = next(link for link in week.links("reader0@example.com") if "/archive/" in link)
    for link in (compare, compare, archive, compare.split("?")[0]):
        assert client.get(path_of(link)).status_code == 200
    pair = urlsplit(compare).path.removeprefix("/compare/")
    assert visits(settings) == [(reader, "archive", "2026-W47"), (reader, "comparison", pair)]
    token = urlsplit(compare).query.removeprefix("r=")
    assert client.get(f"/compare/no-such-vs-pair?r={token}").status_code == 404
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert client.get(f"{urlsplit(compare).path}?r={forged}").status_code == 200
    assert client.get(f"{urlsplit(compare).path}?r=archive").status_code == 200
    assert len(visits(settings)) == 2


def test_a_token_counts_only_the_links_of_its_own_email_and_only_if_it_went_out(
    settings: Settings, week: SentWeek, client: TestClient, tmp_path: Path
) -> None:
    # A token carried to a comparison its email did not show, or to another week's archive
    # (both pages answer 200), counts nothing: the report's clicks stay the sum of its pairs'.
    # Neither does a delivery that never went out, though its token is authentic.
    later = send_week(settings, tmp_path, week=NEXT_WEEK, tools=next_week_tools())
    writer = delivery_ids(settings, week.digest_id)["writer@example.com"]
    writers = {urlsplit(x).path for x in week.links("writer@example.com") if "/compare/" in x}
    others = {urlsplit(x).path for x in week.links("reader0@example.com") if "/compare/" in x}
    token = next(
        urlsplit(x).query.removeprefix("r=")
        for x in week.links("writer@example.com")
        if "/compare/" in x
    )
    elsewhere = sorted(others - writers)[0]
    assert client.get(f"{elsewhere}?r={token}").status_code == 200
    later_archive = next(x for x in later.links("reader0@example.com") if "/archive/" in x)
    assert client.get(f"{urlsplit(later_archive).path}?r={token}").status_code == 200
    assert visits(settings) == []
    (own,) = writers
    assert client.get(f"{own}?r={token}").status_code == 200
    assert visits(settings) == [(writer, "comparison", own.removeprefix("/compare/"))]

    reader = delivery_ids(settings, week.digest_id)["reader1@example.com"]
    with get_engine(settings.database_url).begin() as connection:
        connection.execute(
            update(DELIVERY_TABLE).where(DELIVERY_TABLE.c.id == reader).values(state="skipped")
        )
    unsent = make_token(settings.signing_key(), Purpose.VOTE, reader)
    archive = next(x for x in week.links("reader1@example.com") if "/archive/" in x)
    assert client.get(f"{urlsplit(archive).path}?r={unsent}").status_code == 200
    assert len(visits(settings)) == 1


def test_vote_tokens_never_reach_a_log_line(settings: Settings, week: SentWeek) -> None:
    # A logged vote token votes as its reader: the access log shows [token] instead, whole or
    # cut or lengthened, in the path of a vote link and in the `r` of our own pages' links.
    link = week.vote_link("reader0@example.com", "code-llama-4", "ship")
    token = urlsplit(link).path.split("/")[2]
    compare = next(x for x in week.links("reader0@example.com") if "/compare/" in x)
    for path in (
        path_of(link),
        path_of(link).replace(token, token + "x"),
        path_of(link).replace(token, token[:-3]),
        path_of(compare),
        path_of(compare) + "x&utm=1",
    ):
        line = redact_path(f'127.0.0.1:1 - "GET {path} HTTP/1.1" 200')
        assert token[:-3] not in line and "[token]" in line, line
