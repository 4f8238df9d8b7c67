"""`digest report`: the editor's numbers of a week, counted from the ledger, SendGrid's events
as the webhook stored them and `digest web`'s own records, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update
from starlette.testclient import TestClient
from typer.testing import CliRunner

from digest.cli import app as cli
from digest.config import Settings, get_settings
from digest.db import get_engine
from digest.engagement.markdown import render_markdown
from digest.engagement.page import chart_uris
from digest.engagement.report import Sources, build_report
from digest.models import DIGEST_TABLE
from digest.web.app import create_app
from digest.weeks import IsoWeek, utcnow
from tests.support.cli import assert_user_error, run_digest
from tests.support.engagement import EXPECTED, Answered, answer_week, post_events
from tests.support.scenario import WEEK
from tests.support.sent_week import NEXT_WEEK, next_week_tools, send_week
from tests.support.webhook_events import Signer, event

HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)> $x^2$ | **bold**'


@pytest.fixture
def signer() -> Signer:
    return Signer()


@pytest.fixture
def web_settings(settings: Settings, signer: Signer, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("DIGEST_SENDGRID_WEBHOOK_PUBLIC_KEY", signer.public_key_b64)
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture
def client(web_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(web_settings), base_url=web_settings.site_url) as opened:
        yield opened


@pytest.fixture
def answered(
    web_settings: Settings, client: TestClient, signer: Signer, tmp_path: Path
) -> Answered:
    return answer_week(client, signer, web_settings, send_week(web_settings, tmp_path))


def report_json(*args: str) -> dict[str, object]:
    result = CliRunner().invoke(cli, ["report", "--week", WEEK, "--format", "json", *args])
    assert result.exit_code == 0, result.output
    document: dict[str, object] = json.loads(result.stdout)
    return document


def test_the_weeks_funnel_counts_readers_from_events_and_our_own_pages(
    answered: Answered,
) -> None:
    # Every figure counts readers once: repeated opens, a click SendGrid and our app both saw,
    # machine opens apart, unsubscribes through our own page.
    document = report_json()
    assert {key: document[key] for key in EXPECTED} == EXPECTED
    assert document["clicks"] == {
        "comparison": 1,
        "tool": 1,
        "vote": 1,
        "archive": 1,
        "other": 0,
    }
    pairs = {(p["a"], p["b"]): p for p in document["pairs"]}  # type: ignore[attr-defined]
    assert pairs[answered.pair] == {
        "a": answered.pair[0],
        "b": answered.pair[1],
        "clicks": 3,
        "comparison": 1,
        "tool": 1,
        "vote": 1,
    }
    assert sum(p["clicks"] for p in pairs.values()) == 3
    rates = document["rates"]
    assert rates["complained"] == pytest.approx(1 / 5)  # type: ignore[index]
    assert rates["bounced"] == pytest.approx(1 / 6)  # type: ignore[index]


def test_the_json_holds_every_key_of_the_interface(answered: Answered) -> None:
    # INTERFACE.md: at least these keys, with these types; more may follow.
    document = report_json()
    for key in ("sent", "delivered", "opened", "clicked", "unsubscribed", "complained"):
        assert isinstance(document[key], int), key
    assert isinstance(document["bounced"], int) and isinstance(document["votes"], int)
    assert document["week"] == WEEK
    for pair in document["pairs"]:  # type: ignore[attr-defined]
        assert isinstance(pair["a"], str) and isinstance(pair["b"], str)
        assert isinstance(pair["clicks"], int)
    history = document["history"]
    assert isinstance(history, list) and len(history) == 12
    assert history[-1]["week"] == WEEK and history[0]["sent"] is None


def test_events_that_arrive_later_raise_the_counts_without_counting_twice(
    answered: Answered, client: TestClient, signer: Signer
) -> None:
    # SendGrid delivers events at least once and for days: a repeat changes nothing, news counts.
    before = report_json()
    reader1 = answered.deliveries["reader1@example.com"]
    address = "reader1@example.com"
    repeated = event("delivered", reader1, email=address)
    post_events(client, signer, [repeated, dict(repeated), event("open", reader1, email=address)])
    after = report_json()
    assert after["delivered"] == before["delivered"]
    assert after["opened"] == 3 and after["machine_opened"] == 0


def test_the_history_shows_each_sent_week_and_gaps_for_the_others(
    answered: Answered, web_settings: Settings, tmp_path: Path
) -> None:
    # Twelve weeks end with the one asked for; a week without a digest is a gap, not a zero.
    send_week(web_settings, tmp_path, week=NEXT_WEEK, tools=next_week_tools())
    with get_engine(web_settings.database_url).connect() as connection:
        report = build_report(
            connection,
            week=IsoWeek.parse(NEXT_WEEK),
            sources=Sources.from_settings(web_settings),
            now=utcnow(),
        )
    assert report is not None
    weeks = [week for week, _ in report.history]
    assert weeks[0] == "2026-W37" and weeks[-1] == NEXT_WEEK and len(weeks) == 12
    kept = {week: past for week, past in report.history if past is not None}
    assert set(kept) == {WEEK, NEXT_WEEK}
    # W48 went to the three readers still on the list: no bounced, complaining or gone address.
    assert kept[WEEK].complained == 1 and kept[NEXT_WEEK].sent == 3
    # The writer left through our page after W47 arrived and before W48 did: W47's unsubscribe.
    assert kept[WEEK].unsubscribed == 1 and kept[NEXT_WEEK].unsubscribed == 0


def test_report_out_writes_one_page_with_plots_and_escaped_text(
    answered: Answered, web_settings: Settings, tmp_path: Path
) -> None:
    # The editor's page: four plots held in the page itself, every catalog text escaped.
    with get_engine(web_settings.database_url).begin() as connection:
        document = connection.execute(
            DIGEST_TABLE.select().where(DIGEST_TABLE.c.id == answered.week.digest_id)
        ).one()
        content = dict(document.content)
        content["subject"] = HOSTILE
        content["pairs"][0]["a"]["name"] = HOSTILE
        connection.execute(
            update(DIGEST_TABLE)
            .where(DIGEST_TABLE.c.id == answered.week.digest_id)
            .values(content=content)
        )
    out = tmp_path / "reports"
    result = CliRunner().invoke(cli, ["report", "--week", WEEK, "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = (out / f"report-{WEEK}.html").read_text(encoding="utf-8")
    assert len(re.findall(r'<img src="data:image/svg\+xml;base64,', page)) == 4
    assert "<script" not in page and "<img src=x" not in page
    assert "&lt;script&gt;" in page
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "Opens are a floor" in page
    assert "Engagement of 2026-W47" in result.stdout  # the table goes to stdout as well


def test_a_week_without_a_digest_is_a_clear_error(settings: Settings, tmp_path: Path) -> None:
    # A user's mistake: the week and the fix in one sentence, exit 2, no traceback, no file.
    env = {"DIGEST_DATABASE_URL": os.environ["DIGEST_DATABASE_URL"]}
    result = run_digest("report", "--week", "2026-W10", "--out", "r", cwd=tmp_path, env=env)
    assert_user_error(result, "No digest was sent for 2026-W10", "--week")
    assert result.returncode == 2 and not (tmp_path / "r" / "report-2026-W10.html").exists()
    (tmp_path / "file").write_text("x", encoding="utf-8")
    clash = run_digest("report", "--week", WEEK, "--out", "file", cwd=tmp_path, env=env)
    assert_user_error(clash, "cannot be used as a folder")
    assert_user_error(run_digest("report", "--format", "pdf", cwd=tmp_path, env=env), "--format")


def test_the_artifact_and_plots_take_any_catalog_text(
    answered: Answered, web_settings: Settings
) -> None:
    # Names are drawn as text ("$" is no math markup) and written into markdown tables whole:
    # no cell break, no HTML, whatever the catalog holds.
    with get_engine(web_settings.database_url).begin() as connection:
        row = connection.execute(
            DIGEST_TABLE.select().where(DIGEST_TABLE.c.id == answered.week.digest_id)
        ).one()
        content = dict(row.content)
        for pair in content["pairs"]:
            pair["a"]["name"] = HOSTILE + r" \frac{1 $unbalanced"
        connection.execute(
            update(DIGEST_TABLE)
            .where(DIGEST_TABLE.c.id == answered.week.digest_id)
            .values(content=content)
        )
    with get_engine(web_settings.database_url).connect() as connection:
        report = build_report(
            connection,
            week=IsoWeek.parse(WEEK),
            sources=Sources.from_settings(web_settings),
            now=utcnow(),
        )
    assert report is not None
    markdown = render_markdown(report, charts=chart_uris(report))
    pair_rows = [line for line in markdown.splitlines() if "unbalanced" in line]
    assert len(pair_rows) == 3
    for line in pair_rows:
        cells = re.split(r"(?<!\\)\|", line)  # split on pipes that are not escaped
        assert len(cells) == 7, line  # five cells between the outer pipes
        assert "<script" not in line and "&lt;script&gt;" in line
    assert markdown.count("](data:image/svg+xml;base64,") == 4
