"""GET /feeds/votes.json and `digest votes`: the tallies the site fills its community column
with, behind a bearer token, cached and ETag'd; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient
from typer.testing import CliRunner

from digest.cli import app as cli
from digest.config import Settings, get_settings
from digest.send import get_backend
from digest.web.app import create_app
from digest.web.context import WebContext
from digest.web.feeds import FEED_PATH, VoteFeed
from tests.support.cli import assert_user_error, run_digest
from tests.support.scenario import WEEK
from tests.support.sent_week import NEXT_WEEK, SentWeek, next_week_tools, send_week
from tests.support.voting import press

FEED_TOKEN = "feed-token-for-the-site-0123456789"
BEARER = {"Authorization": f"Bearer {FEED_TOKEN}"}


@pytest.fixture
def feed_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("DIGEST_VOTES_FEED_TOKEN", FEED_TOKEN)
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture
def week(feed_settings: Settings, tmp_path: Path) -> SentWeek:
    return send_week(feed_settings, tmp_path)


@pytest.fixture
def client(feed_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(feed_settings), base_url=feed_settings.site_url) as opened:
        yield opened


def cli_votes(*args: str) -> dict[str, object]:
    result = CliRunner().invoke(cli, ["votes", *args, "--format", "json"])
    assert result.exit_code == 0, result.output
    document: dict[str, object] = json.loads(result.output)
    return document


def test_without_its_setting_the_feed_does_not_exist(settings: Settings) -> None:
    # DIGEST_VOTES_FEED_TOKEN unset (or blank): 404, as for any address the site does not serve.
    with TestClient(create_app(settings), base_url=settings.site_url) as client:
        assert client.get(FEED_PATH, headers=BEARER).status_code == 404


def test_the_feed_answers_401_without_the_right_bearer_token(client: TestClient) -> None:
    # Only the site reads the tallies: no header, another token, a prefix of it, or Basic: 401.
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Bearer {FEED_TOKEN[:-1]}"},
        {"Authorization": f"Bearer {FEED_TOKEN}x"},
        {"Authorization": f"Basic {FEED_TOKEN}"},
        {"Authorization": FEED_TOKEN},
    ):
        answer = client.get(FEED_PATH, headers=headers)
        assert answer.status_code == 401, headers
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert FEED_TOKEN not in answer.text
    assert client.get(FEED_PATH, headers={"Authorization": f"bearer  {FEED_TOKEN} "}).is_success


def test_the_feed_and_digest_votes_agree(
    feed_settings: Settings, week: SentWeek, client: TestClient
) -> None:
    # The site's feed and the editor's command count the same votes, tool by tool.
    press(client, week.vote_link("reader0@example.com", "code-llama-4", "ship"))
    press(client, week.vote_link("reader1@example.com", "code-llama-4", "skip"))
    press(client, week.vote_link("reader2@example.com", "code-llama-4", "ship"))
    press(client, week.vote_link("writer@example.com", "inkwell", "skip"))
    feed = client.get(FEED_PATH, headers=BEARER).json()
    assert set(feed) == {"generated_at", "tools"}
    by_slug = {tool["slug"]: tool for tool in feed["tools"]}
    weekly = cli_votes("--week", WEEK)
    assert weekly["week"] == WEEK
    tools = weekly["tools"]
    assert isinstance(tools, list) and len(tools) == 6  # every tool of the email: 3 pairs
    for tool in tools:
        assert by_slug[tool["slug"]] == {k: tool[k] for k in ("slug", "ship", "skip")}
        assert tool["voters"] == tool["ship"] + tool["skip"]
    assert by_slug["code-llama-4"] == {"slug": "code-llama-4", "ship": 2, "skip": 1}
    overall = cli_votes()
    assert overall["week"] is None
    assert [
        {k: t[k] for k in ("slug", "ship", "skip")}
        for t in overall["tools"]  # type: ignore[attr-defined]
    ] == feed["tools"]


def test_votes_of_a_week_count_that_weeks_email_only(
    feed_settings: Settings, week: SentWeek, client: TestClient, tmp_path: Path
) -> None:
    # A week's tallies are its email's votes; the feed and the overall command hold them all.
    later = send_week(feed_settings, tmp_path, week=NEXT_WEEK, tools=next_week_tools())
    press(client, week.vote_link("reader0@example.com", "code-llama-4", "ship"))
    press(client, later.vote_link("reader0@example.com", "gitgenie", "skip"))
    first = {t["slug"]: t for t in cli_votes("--week", WEEK)["tools"]}  # type: ignore[attr-defined]
    second = {t["slug"]: t for t in cli_votes("--week", NEXT_WEEK)["tools"]}  # type: ignore[attr-defined]
    assert first["code-llama-4"]["ship"] == 1 and "gitgenie" not in first
    assert second["gitgenie"]["skip"] == 1 and "code-llama-4" not in second
    feed = {t["slug"]: t for t in client.get(FEED_PATH, headers=BEARER).json()["tools"]}
    assert feed["code-llama-4"]["ship"] == 1 and feed["gitgenie"]["skip"] == 1


def test_the_feed_is_cached_briefly_and_answers_304_to_its_etag(
    feed_settings: Settings, week: SentWeek, client: TestClient
) -> None:
    # A poller with If-None-Match gets 304 until a vote changes the tallies and the cache ends.
    now = [1000.0]
    context = WebContext.build(feed_settings, backend_factory=get_backend)
    feed = VoteFeed(context, ttl=30, clock=lambda: now[0])
    with TestClient(Starlette(routes=feed.routes())) as poller:
        first = poller.get(FEED_PATH, headers=BEARER)
        etag = first.headers["etag"]
        assert first.status_code == 200 and first.headers["cache-control"] == "private, max-age=30"
        again = poller.get(FEED_PATH, headers={**BEARER, "If-None-Match": etag})
        assert again.status_code == 304 and again.headers["etag"] == etag and not again.content
        listed = poller.get(FEED_PATH, headers={**BEARER, "If-None-Match": f'"other", {etag}'})
        assert listed.status_code == 304
        press(client, week.vote_link("reader0@example.com", "patchpilot", "ship"))
        cached = poller.get(FEED_PATH, headers={**BEARER, "If-None-Match": etag})
        assert cached.status_code == 304  # within the 30 s: the same document
        now[0] += 31
        fresh = poller.get(FEED_PATH, headers={**BEARER, "If-None-Match": etag})
        assert fresh.status_code == 200 and fresh.headers["etag"] != etag
        tools = {t["slug"]: t for t in fresh.json()["tools"]}
        assert tools["patchpilot"] == {"slug": "patchpilot", "ship": 1, "skip": 0}


def test_digest_votes_of_a_week_never_sent_is_a_clear_error(week: SentWeek, tmp_path: Path) -> None:
    # A user's mistake: a sentence naming the week and what to do, exit 2, no traceback.
    env = {"DIGEST_DATABASE_URL": os.environ["DIGEST_DATABASE_URL"]}
    result = run_digest("votes", "--week", "2026-W10", cwd=tmp_path, env=env)
    assert_user_error(result, "No digest was sent for 2026-W10", "--week")
    assert result.returncode == 2
    assert_user_error(run_digest("votes", "--format", "xml", cwd=tmp_path, env=env), "--format")
    assert_user_error(run_digest("votes", "--week", "2026-W99", cwd=tmp_path, env=env), "W99")


def test_digest_votes_prints_a_table_and_csv(
    feed_settings: Settings, week: SentWeek, client: TestClient
) -> None:
    # The editor's two other forms carry the same counts.
    press(client, week.vote_link("reader0@example.com", "code-llama-4", "skip"))
    table = CliRunner().invoke(cli, ["votes", "--week", WEEK])
    assert table.exit_code == 0
    assert "Votes from the email of 2026-W47: 1 vote on 6 tools" in table.output
    assert any(
        line.split()[:4] == ["code-llama-4", "0", "1", "1"] for line in table.output.splitlines()
    )
    rows = CliRunner().invoke(cli, ["votes", "--week", WEEK, "--format", "csv"]).output
    lines = rows.splitlines()
    assert lines[0] == "slug,ship,skip,voters" and "code-llama-4,0,1,1" in lines
