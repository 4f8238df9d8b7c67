"""/compare/<a>-vs-<b>: the page every "Read the full comparison" button opens, on a real database.

The app is driven through Starlette's TestClient as `digest web` serves it; digests are frozen
content rows as the ledger stores them.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.engine import Engine
from starlette.testclient import TestClient

from digest.catalog.records import ReviewRecord, ToolRecord
from digest.config import Settings, get_settings
from digest.content.compose import tool_card
from digest.content.frozen import ReviewCard
from digest.db import get_engine
from digest.models import Digest
from digest.web.app import create_app
from tests.content_factories import HOSTILE, make_content, make_pair, make_tool

SITE = "https://digest.example.com"
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}

REVIEWS = [
    ReviewCard(
        reviewer="Builder", verdict="ship", quote="Ships patches I merge.", lens="DX", score=88
    ),
    ReviewCard(
        reviewer="Skeptic", verdict="skip", quote="Too eager on big diffs.", lens="Risk", score=41
    ),
    ReviewCard(reviewer="Designer", verdict="ship", quote="", lens=None, score=None),
]


@pytest.fixture
def web_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("DIGEST_SITE_URL", SITE)
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture
def engine(web_settings: Settings) -> Engine:
    return get_engine(web_settings.database_url)


@pytest.fixture
def client(web_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(web_settings), base_url=SITE, follow_redirects=False) as c:
        yield c


def store_digest(
    engine: Engine, content: dict[str, Any], *, week: str, planned: bool = True
) -> None:
    with engine.begin() as connection:
        connection.execute(
            insert(Digest).values(
                week=week,
                subject=f"Verdicts of {week}",
                content=content,
                created_at=datetime.now(UTC),
                planned_at=datetime.now(UTC) if planned else None,
            )
        )


def reviewed_pair(a: str = "code-llama-4", b: str = "patchpilot", **a_fields: Any) -> Any:
    first = make_tool(
        a,
        reviews=REVIEWS,
        community_ship=30,
        community_skip=20,
        community_label="30 ship / 20 skip",
        **a_fields,
    )
    second = make_tool(
        b, is_new=False, vendor="Forge", ship_share=0.4, panel_label="2 ship / 3 skip"
    )
    return make_pair(0, a=first, b=second, compare_path=f"/compare/{a}-vs-{b}")


def test_a_sent_pair_has_a_page_with_every_review_side_by_side(
    client: TestClient, engine: Engine
) -> None:
    # The button's page shows both tools, every reviewer's verdict, lens, score and quote.
    content = make_content(pairs=[reviewed_pair()], also_new=0)
    store_digest(engine, content.model_dump(mode="json"), week="2026-W47")
    page = client.get("/compare/code-llama-4-vs-patchpilot")
    assert page.status_code == 200
    for name, value in SECURITY_HEADERS.items():
        assert page.headers[name] == value
    assert "script-src" not in page.headers["content-security-policy"]
    body = html.unescape(page.text)
    for text in (
        "Code Llama 4",
        "Patchpilot",
        "Builder",
        "DX",
        "88/100",
        "Ships patches I merge.",
        "Skeptic",
        "Risk",
        "41/100",
        "Too eager on big diffs.",
        "Designer",
        "75% ship",  # the panel's share
        "3 ship / 1 skip",
        "30 ship / 20 skip",  # the community's counts
        "60% ship",  # and its share
        "Freemium",
        "Teams that review every change before it merges",
        "by Forge",
        content.pairs[0].verdict,
    ):
        assert text in body, text


def test_slugs_holding_vs_are_matched_whole_against_the_digests_pairs(
    client: TestClient, engine: Engine
) -> None:
    # "a-vs-b-vs-c" is the pair (a-vs-b, c) of the digest, never split at the first "-vs-".
    pair = reviewed_pair("model-vs-model", "bench-vs-arena")
    store_digest(
        engine, make_content(pairs=[pair], also_new=0).model_dump(mode="json"), week="2026-W47"
    )
    page = client.get("/compare/model-vs-model-vs-bench-vs-arena")
    assert page.status_code == 200
    assert "Model Vs Model" in page.text and "Bench Vs Arena" in page.text
    for wrong in (
        "model-vs-model",
        "model-vs-model-vs-bench",
        "vs-arena",
        "model-vs-bench-vs-arena",
    ):
        assert client.get(f"/compare/{wrong}").status_code == 404, wrong


@pytest.mark.parametrize(
    "path",
    [
        "/compare/unknown-vs-pair",
        "/compare/Code-Llama-4-vs-patchpilot",
        "/compare/code-llama-4-vs-patchpilot%2F..",
        "/compare/patchpilot-vs-code-llama-4",
        "/compare/",
        "/compare/" + "a" * 400 + "-vs-b",
    ],
)
def test_an_unknown_or_malformed_pair_gets_the_apps_404_page(
    client: TestClient, engine: Engine, path: str
) -> None:
    # Anything but a sent pair's exact address is the app's own 404, with the security headers.
    store_digest(
        engine,
        make_content(pairs=[reviewed_pair()], also_new=0).model_dump(mode="json"),
        week="2026-W47",
    )
    page = client.get(path)
    assert page.status_code == 404
    assert "text/html" in page.headers["content-type"]
    for name, value in SECURITY_HEADERS.items():
        assert page.headers[name] == value


def test_a_pair_of_a_digest_never_planned_has_no_page(client: TestClient, engine: Engine) -> None:
    # A draft's pairs may still change: only digests that went out publish comparisons.
    store_digest(
        engine,
        make_content(pairs=[reviewed_pair()], also_new=0).model_dump(mode="json"),
        week="2026-W47",
        planned=False,
    )
    assert client.get("/compare/code-llama-4-vs-patchpilot").status_code == 404


def test_content_frozen_before_reviews_were_kept_still_renders_its_pull_quote(
    client: TestClient, engine: Engine
) -> None:
    # Old frozen content has no `reviews`: the page loads and shows the pull quote it has.
    document = make_content(pairs=[reviewed_pair()], also_new=0).model_dump(mode="json")
    for side in ("a", "b"):
        for key in ("reviews", "community_ship", "community_skip"):
            del document["pairs"][0][side][key]
    store_digest(engine, document, week="2026-W46")
    page = client.get("/compare/code-llama-4-vs-patchpilot")
    assert page.status_code == 200
    assert "It found the flaky test" in page.text
    assert "kept only the pull quote" in page.text


def test_hostile_catalog_text_is_escaped_on_the_compare_page(
    client: TestClient, engine: Engine
) -> None:
    # Names, taglines, vendors, lenses and quotes are shown as text, never as markup.
    evil = " ".join(HOSTILE)
    hostile_reviews = [ReviewCard(reviewer=evil, verdict="ship", quote=evil, lens=evil, score=50)]
    pair = reviewed_pair(
        name=evil, tagline=evil, vendor=evil, best_for=evil, url="javascript:alert(1)"
    )
    pair.a.reviews = hostile_reviews
    store_digest(
        engine, make_content(pairs=[pair], also_new=0).model_dump(mode="json"), week="2026-W47"
    )
    page = client.get("/compare/code-llama-4-vs-patchpilot")
    assert page.status_code == 200
    assert "<script>" not in page.text and "<img" not in page.text
    assert 'href="javascript:' not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


def test_compose_freezes_every_review_and_the_community_counts() -> None:
    # The page can only show what the frozen content holds: all reviews, best score first.
    record = ToolRecord(
        slug="t",
        name="T",
        category="Developer Tools",
        tagline="t",
        added_at=datetime(2026, 11, 17, tzinfo=UTC),
        community_ship=5,
        community_skip=2,
        reviews=(
            ReviewRecord(reviewer="Low", verdict="skip", quote="meh", lens="Cost", score=20),
            ReviewRecord(reviewer="High", verdict="ship", quote="", lens=None, score=90),
            ReviewRecord(reviewer="None", verdict="ship", quote="ok"),
        ),
    )
    card = tool_card(record, is_new=True)
    assert [(r.reviewer, r.verdict, r.lens, r.score) for r in card.reviews] == [
        ("High", "ship", None, 90),
        ("Low", "skip", "Cost", 20),
        ("None", "ship", None, None),
    ]
    assert (card.community_ship, card.community_skip) == (5, 2)
    assert card.community_share == pytest.approx(5 / 7)
