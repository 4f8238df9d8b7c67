"""The catalog feed against a real HTTP server on 127.0.0.1: a well-behaved client (conditional
requests, retries, timeout, size cap, gzip), an all-or-nothing import, freshness for the week
being sent, and an address and token that never reach a message."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import Session, select

from digest.catalog.feed import FeedClient, locate, shown_feed_url
from digest.catalog.importer import import_catalog, parse_catalog
from digest.catalog.sync import SyncReport, sync_catalog
from digest.config import Settings
from digest.db import get_engine, session_scope
from digest.errors import CatalogFeedError, ConfigError, ImportFileError, StaleCatalogError
from digest.models import CatalogFeed, Tool
from digest.weeks import IsoWeek
from tests.support.factories import tool_dict, write_catalog
from tests.support.feed_server import Served, feed_document, feed_server
from tests.support.prefect_server import free_port
from tests.support.scenario import WEEK, week_tools

TOKEN = "feed-token-never-shown-4d1f"
# After 2026-W47 ended (Monday 23 November 2026, 00:00 UTC), and before.
FRESH = datetime(2026, 11, 23, 6, 0, tzinfo=UTC)
STALE = datetime(2026, 11, 21, 6, 0, tzinfo=UTC)


def _client(**overrides: object) -> tuple[FeedClient, list[float]]:
    """A client with short timeouts whose backoff waits are recorded instead of slept."""
    waits: list[float] = []
    options: dict[str, object] = {
        "timeout_seconds": 2.0,
        "max_bytes": 1_000_000,
        "max_attempts": 3,
        "token": TOKEN,
        "backoff_seconds": 0.25,
        "sleep": waits.append,
    }
    options.update(overrides)
    return FeedClient(**options), waits  # type: ignore[arg-type]


def _sync(settings: Settings, url: str, client: FeedClient, week: str | None = None) -> SyncReport:
    return sync_catalog(
        engine=get_engine(settings.database_url),
        client=client,
        location=locate(url),
        week=IsoWeek.parse(week) if week else None,
    )


def _slugs(settings: Settings) -> list[str]:
    with Session(get_engine(settings.database_url)) as session:
        return sorted(t.slug for t in session.exec(select(Tool)))


# Most checks here are about HTTP: SQLite is enough for them; the first runs on both databases.
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def test_an_unchanged_feed_answers_304_and_imports_nothing(settings: Settings) -> None:
    # The second sync asks conditionally (ETag and Last-Modified) and a 304 changes nothing.
    served = Served(document=feed_document(week_tools(), FRESH))
    client, _ = _client()
    with feed_server(served) as url:
        first = _sync(settings, url, client)
        second = _sync(settings, url, client)
    assert (first.added, first.updated, first.not_modified) == (7, 0, False)
    assert second.not_modified and second.generated_at == FRESH
    assert "304" in second.changes()
    asked, again = served.requests
    assert "If-None-Match" not in asked
    assert again["If-None-Match"] == served.etag()
    assert again["If-Modified-Since"] == served.last_modified
    assert again["User-Agent"].startswith("verdict-digest/")
    assert again["Authorization"] == f"Bearer {TOKEN}"
    assert len(_slugs(settings)) == 7


@sqlite_only
def test_transient_503s_are_retried_with_backoff_then_imported(settings: Settings) -> None:
    # Two 503s, then the feed: three requests, growing waits between them, one import.
    served = Served(document=feed_document(week_tools(), FRESH), failures=[503, 503])
    client, waits = _client()
    with feed_server(served) as url:
        report = _sync(settings, url, client)
    assert len(served.requests) == 3
    assert waits == [0.25, 0.5]
    assert report.added == 7


@sqlite_only
def test_a_feed_that_keeps_failing_fails_with_the_address_and_imports_nothing(
    settings: Settings,
) -> None:
    # After the last try: one sentence naming the address and the status; the catalog as it was.
    served = Served(document=feed_document(week_tools(), FRESH), failures=[503] * 5)
    client, waits = _client()
    with feed_server(served) as url, pytest.raises(CatalogFeedError) as caught:
        _sync(settings, url, client)
    assert len(served.requests) == 3 and len(waits) == 2
    message = str(caught.value)
    assert url in message and "HTTP 503" in message and "nothing was imported" in message
    assert TOKEN not in message
    assert _slugs(settings) == []


@sqlite_only
def test_a_feed_nobody_answers_at_is_retried_then_fails(settings: Settings) -> None:
    # Connection refused is transient (the site restarting): tried again, then one sentence.
    client, waits = _client()
    url = f"http://127.0.0.1:{free_port()}/catalog.json"
    with pytest.raises(CatalogFeedError) as caught:
        _sync(settings, url, client)
    assert "connection failed (ConnectError) on each of 3 tries" in str(caught.value)
    assert url in str(caught.value) and waits == [0.25, 0.5]


@sqlite_only
def test_a_429_waits_as_long_as_retry_after_says(settings: Settings) -> None:
    # The server's Retry-After is honoured (capped), instead of our own backoff.
    served = Served(document=feed_document(week_tools(), FRESH), failures=[429], retry_after="7")
    client, waits = _client()
    with feed_server(served) as url:
        _sync(settings, url, client)
    assert waits == [7.0] and len(served.requests) == 2


@sqlite_only
def test_a_refusal_is_not_retried_and_names_the_token_setting(settings: Settings) -> None:
    # A 401 will not change by asking again: one request, and the fix names the token setting.
    served = Served(failures=[401])
    client, waits = _client()
    with feed_server(served) as url, pytest.raises(CatalogFeedError) as caught:
        _sync(settings, url, client)
    assert len(served.requests) == 1 and waits == []
    assert "HTTP 401" in str(caught.value) and "DIGEST_CATALOG_TOKEN" in str(caught.value)
    assert TOKEN not in str(caught.value)


@sqlite_only
def test_a_feed_that_hangs_fails_after_the_timeout(settings: Settings) -> None:
    # A server that never answers costs each try its timeout, not the run's whole day.
    served = Served(document=feed_document(week_tools(), FRESH), hang_seconds=5)
    client, _ = _client(timeout_seconds=0.5, max_attempts=2)
    started = time.monotonic()
    with feed_server(served) as url, pytest.raises(CatalogFeedError) as caught:
        _sync(settings, url, client)
    assert time.monotonic() - started < 3
    assert "no answer within 0.5 s on each of 2 tries" in str(caught.value)
    assert _slugs(settings) == []


@pytest.mark.parametrize("gzipped", [False, True])
@sqlite_only
def test_a_body_over_the_cap_is_refused(settings: Settings, gzipped: bool) -> None:
    # Past DIGEST_CATALOG_MAX_BYTES nothing is imported, gzip or not: the cap counts what
    # the body decodes to, so a small compressed body cannot hide a huge catalog.
    tools = [tool_dict(f"tool-{i}", description="x" * 4000) for i in range(40)]
    served = Served(document=feed_document(tools, FRESH), gzip=gzipped)
    client, _ = _client(max_bytes=100_000)
    with feed_server(served) as url, pytest.raises(CatalogFeedError) as caught:
        _sync(settings, url, client)
    assert "larger than DIGEST_CATALOG_MAX_BYTES (100,000 bytes)" in str(caught.value)
    assert _slugs(settings) == []


@sqlite_only
def test_a_redirect_to_plain_http_elsewhere_is_refused_before_it_is_followed(
    settings: Settings,
) -> None:
    # A redirect must not downgrade the feed to plain http off this machine: refused before any
    # request goes there, the token with it.
    served = Served(redirect_to="http://feeds.example.invalid/catalog.json?key=s3cret")
    client, _ = _client()
    with feed_server(served) as url, pytest.raises(CatalogFeedError) as caught:
        _sync(settings, url, client)
    message = str(caught.value)
    assert "redirected to http://feeds.example.invalid/catalog.json?key=***" in message
    assert "s3cret" not in message and url in message
    assert len(served.requests) == 1


@sqlite_only
def test_a_gzipped_feed_under_the_cap_is_imported(settings: Settings) -> None:
    # Compression is asked for and decoded.
    served = Served(document=feed_document(week_tools(), FRESH), gzip=True)
    client, _ = _client()
    with feed_server(served) as url:
        report = _sync(settings, url, client)
    assert "gzip" in served.requests[0]["Accept-Encoding"]
    assert report.added == 7


@sqlite_only
def test_a_feed_with_an_invalid_record_imports_nothing_and_is_fetched_whole_again(
    settings: Settings,
) -> None:
    # One bad record: nothing imported, every problem listed, and no validators kept, so the
    # fixed feed is fetched and imported in full rather than answered with a 304.
    broken = [*week_tools(), tool_dict("Bad Slug")]
    served = Served(document=feed_document(broken, FRESH))
    client, _ = _client()
    with feed_server(served) as url:
        with pytest.raises(ImportFileError) as caught:
            _sync(settings, url, client)
        assert url in str(caught.value) and "'Bad Slug'" in str(caught.value)
        assert "nothing was imported" in str(caught.value)
        assert "--skip-invalid" not in str(caught.value)
        assert _slugs(settings) == []
        served.document = feed_document(week_tools(), FRESH)
        report = _sync(settings, url, client)
    assert "If-None-Match" not in served.requests[1]
    assert report.added == 7


@sqlite_only
def test_a_stale_feed_is_refused_for_the_week_then_accepted_once_fresh(
    settings: Settings,
) -> None:
    # A feed generated before the week ended is not complete for it: refused, nothing imported
    # and nothing remembered; the same address once regenerated is imported.
    served = Served(document=feed_document(week_tools(), STALE))
    client, _ = _client()
    with feed_server(served) as url:
        with pytest.raises(StaleCatalogError) as caught:
            _sync(settings, url, client, week=WEEK)
        message = str(caught.value)
        assert WEEK in message and url in message and "not complete" in message
        assert _slugs(settings) == []
        served.document = feed_document(week_tools(), FRESH)
        report = _sync(settings, url, client, week=WEEK)
    assert report.added == 7 and report.generated_at == FRESH


@sqlite_only
def test_a_304_is_still_checked_for_freshness(settings: Settings) -> None:
    # The stored generated_at answers for a 304: an old feed stays stale for a later week.
    served = Served(document=feed_document(week_tools(), FRESH))
    client, _ = _client()
    with feed_server(served) as url:
        _sync(settings, url, client, week=WEEK)
        with pytest.raises(StaleCatalogError):
            _sync(settings, url, client, week="2026-W48")
    assert len(served.requests) == 2


@sqlite_only
def test_a_bad_generated_at_imports_nothing(settings: Settings) -> None:
    # generated_at without an offset cannot be compared with a week: the file is refused.
    served = Served(document=feed_document(week_tools(), "2026-11-23T06:00:00"))
    client, _ = _client()
    with feed_server(served) as url, pytest.raises(ImportFileError, match="generated_at"):
        _sync(settings, url, client)
    assert _slugs(settings) == []


@sqlite_only
def test_a_path_and_a_file_url_are_feeds_too(settings: Settings, tmp_path: Path) -> None:
    # A feed on disk: the same import, by path or by file:// URL.
    path = write_catalog(tmp_path / "feed.json", week_tools())
    client, _ = _client()
    assert _sync(settings, str(path), client).added == 7
    assert _sync(settings, path.as_uri(), client).unchanged == 7
    with Session(get_engine(settings.database_url)) as session:
        assert {row.url for row in session.exec(select(CatalogFeed))} == {
            str(path),
            path.as_uri(),
        }


@sqlite_only
def test_a_file_feed_over_the_cap_is_refused_and_generated_at_is_read_by_import(
    settings: Settings, tmp_path: Path
) -> None:
    # The cap holds for a feed on disk too; `catalog import` accepts generated_at and keeps it
    # out of the tools.
    path = tmp_path / "feed.json"
    path.write_text(
        '{"format": "verdict-digest/catalog@1", "generated_at": "2026-11-23T06:00:00Z", '
        '"tools": []}'
    )
    assert parse_catalog(path.read_bytes(), source="feed").generated_at == FRESH
    with session_scope(get_engine(settings.database_url)) as session:
        assert import_catalog(session=session, path=path).created == 0
    client, _ = _client(max_bytes=20)
    with pytest.raises(CatalogFeedError, match="larger than DIGEST_CATALOG_MAX_BYTES"):
        _sync(settings, str(path), client)


def test_addresses_lose_their_credentials_when_shown() -> None:
    # A user, password or query token in the address never reaches a message.
    shown = shown_feed_url("https://ops:hunter2@site.example/feed.json?token=abc123&v=2#x")
    assert shown == "https://site.example/feed.json?token=***&v=***"
    assert "hunter2" not in shown and "abc123" not in shown


@pytest.mark.parametrize(
    "url",
    ["http://site.example/feed.json", "ftp://site.example/feed.json", "gopher://x/y"],
)
def test_only_https_file_and_loopback_http_are_fetched(url: str) -> None:
    # Plain http would let anyone on the path change the catalog: only this machine may use it.
    with pytest.raises(ConfigError, match="DIGEST_CATALOG_URL"):
        locate(url)
    assert locate("http://127.0.0.1:8080/feed.json").path is None
    assert locate("http://[::1]:8080/feed.json").path is None
    assert locate("https://site.example/feed.json").path is None


def test_a_file_url_on_another_machine_is_refused_not_read_here() -> None:
    # file://otherhost/etc/x names otherhost's file: reading our own /etc/x instead would sync
    # whatever happens to lie there. localhost and no host are this machine.
    with pytest.raises(ConfigError, match=r"names a file on another machine \(otherhost\)"):
        locate("file://otherhost/srv/feed.json")
    assert locate("file:///srv/feed.json").path == Path("/srv/feed.json")
    assert locate("file://localhost/srv/feed.json").path == Path("/srv/feed.json")
