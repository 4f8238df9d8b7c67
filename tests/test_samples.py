"""The demo's sample catalog: the data file on its own, and the loader that moves it to now."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlmodel import Session

from digest.catalog.importer import ToolIn, import_catalog, load_tools, parse_catalog
from digest.catalog.records import ReviewRecord, ToolRecord
from digest.content.compose import pull_quote
from digest.content.selection import identity, select_week
from digest.db import ensure_schema, session_scope
from digest.samples.catalog import read_sample_file, sample_catalog
from digest.weeks import IsoWeek, week_of

SAMPLE_FILE = Path(__file__).resolve().parents[1] / "digest" / "samples" / "catalog.json"
ZONES = ["UTC", "Europe/Berlin", "America/Los_Angeles", "Pacific/Kiritimati", "Pacific/Pago_Pago"]


def _records(document: dict[str, Any]) -> list[ToolRecord]:
    parsed = parse_catalog(json.dumps(document).encode(), source="sample")
    assert parsed.problems == []
    # Only the record that shows hostile markup loses anything at the door.
    assert parsed.warnings
    assert all("(slug 'markup-mayhem')" in warning for warning in parsed.warnings)
    return [_record(tool) for tool in parsed.tools]


def _record(tool: ToolIn) -> ToolRecord:
    return ToolRecord(
        slug=tool.slug,
        name=tool.name,
        category=tool.category,
        tagline=tool.tagline,
        added_at=tool.added_at,
        vendor=tool.vendor,
        best_for=tool.best_for,
        pricing=tool.pricing,
        tags=tuple(tool.tags),
        reviews=tuple(
            ReviewRecord(r.reviewer, r.verdict, r.quote, r.lens, r.score) for r in tool.reviews
        ),
    )


def _added(document: dict[str, Any]) -> dict[str, datetime]:
    return {tool["slug"]: datetime.fromisoformat(tool["added_at"]) for tool in document["tools"]}


def _weeks_back(week: IsoWeek, newest: IsoWeek) -> int:
    return (newest.monday() - week.monday()).days // 7


def test_the_file_is_a_valid_catalog_as_it_stands(sqlite_url: str) -> None:
    # `digest catalog import digest/samples/catalog.json` takes it as it is, with its 2026 dates.
    engine = ensure_schema(sqlite_url)
    with session_scope(engine) as session:
        report = import_catalog(session=session, path=SAMPLE_FILE)
    assert (report.created, report.skipped) == (len(read_sample_file()["tools"]), 0)
    with Session(engine) as session:
        tools = load_tools(session)
    assert min(tool.added_at for tool in tools) >= datetime(2026, 1, 1, tzinfo=UTC)


def test_the_file_holds_what_real_data_holds() -> None:
    # The awkward cases the demo exists to show: a duplicate, an unreviewed tool, hostile markup.
    records = _records(read_sample_file())
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for tool in records:
        groups[identity(tool)].append(tool.slug)
    assert sorted(slugs for slugs in groups.values() if len(slugs) > 1) == [
        ["querycraft", "query-craft"]
    ]
    assert [tool.slug for tool in records if not tool.reviews] == ["browserbot"]
    hostile = next(tool for tool in records if tool.slug == "markup-mayhem")
    assert hostile.name == "Markup Mayhem"
    assert hostile.tagline == 'Claims to write "perfect" HTML & more 🎉'
    quote = pull_quote(hostile)
    assert quote is not None and "<" not in quote[0]


def test_the_panel_reads_like_a_panel() -> None:
    # Varied reviewers and lenses, scores on the side of their verdict, no canned quotes.
    records = _records(read_sample_file())
    reviews = [review for tool in records for review in tool.reviews]
    assert len({review.reviewer for review in reviews}) >= 5
    assert len({review.lens for review in reviews}) >= 5
    for review in reviews:
        assert review.score is not None
        assert (review.score >= 60) == (review.verdict == "ship"), review
    owners: dict[str, set[str]] = defaultdict(set)
    for tool in records:
        for review in tool.reviews:
            owners[review.quote.casefold()].add(tool.slug)
            assert tool.name.casefold() not in review.quote.casefold(), (tool.slug, review.quote)
    # Only the duplicate record copies a quote, as a scraped duplicate would.
    assert [slugs for slugs in owners.values() if len(slugs) > 1] == [{"querycraft", "query-craft"}]
    winners = {quote[1] for tool in records if (quote := pull_quote(tool)) is not None}
    assert len(winners) >= 5


def test_the_loader_changes_nothing_but_dates() -> None:
    # Moving the sample in time must not edit the data the digest is built from.
    written = read_sample_file()
    moved = sample_catalog(zone=ZoneInfo("Europe/Berlin"))
    for before, after in zip(written["tools"], moved["tools"], strict=True):
        assert {**before, "added_at": None} == {**after, "added_at": None}
    assert moved["format"] == written["format"]


def _check_moved(now: datetime, zone: ZoneInfo) -> None:
    written = _added(read_sample_file())
    document = sample_catalog(zone=zone, now=now)
    moved = _added(document)
    this_week = week_of(now, zone)
    newest = max(IsoWeek.containing(moment.date()) for moment in written.values())
    for slug, moment in moved.items():
        original = written[slug]
        local = moment.astimezone(zone)
        back = _weeks_back(IsoWeek.containing(original.date()), newest)
        assert week_of(moment, zone) == IsoWeek.containing(
            this_week.monday() - timedelta(weeks=back)
        )
        assert moment <= now, slug
        if back > 0:
            # Older weeks keep their weekday and wall-clock time, in the reader's zone.
            assert local.replace(tzinfo=None) == original.replace(tzinfo=None) + (
                this_week.monday() - newest.monday()
            )
    current = sorted(
        (written[slug], slug) for slug in moved if written[slug].date() >= newest.monday()
    )
    assert [moved[slug] for _, slug in current] == sorted(moved[slug] for _, slug in current)

    records = _records(document)
    for week in (this_week, this_week.previous()):
        assert select_week(records, week=week, zone=zone).new, week
    # The scheduled run's week (the last complete one) shows the duplicate and the pending tool.
    last = select_week(records, week=this_week.previous(), zone=zone)
    assert [tool.slug for tool in last.pending] == ["browserbot"]
    assert [(item.slug, item.reason) for item in last.excluded] == [
        ("query-craft", "duplicate of querycraft")
    ]


@pytest.mark.parametrize("zone_name", ZONES)
@pytest.mark.parametrize(
    "local",
    [
        datetime(2026, 12, 7, 0, 0, 0),  # the very start of a week
        datetime(2026, 12, 7, 0, 0, 30),
        datetime(2026, 12, 9, 12, 0),
        datetime(2026, 12, 13, 23, 59, 59),  # the very end of one
        datetime(2026, 3, 29, 12, 0),  # Berlin's spring DST Sunday
        datetime(2026, 11, 1, 1, 30),  # Los Angeles' autumn DST night
        datetime(2027, 1, 3, 18, 0),  # a week that straddles the new year
    ],
)
def test_this_week_and_last_week_have_new_tools_and_nothing_is_in_the_future(
    local: datetime, zone_name: str
) -> None:
    # The demo always finds new tools, old weeks keep their days, and no tool is dated after now.
    zone = ZoneInfo(zone_name)
    _check_moved(local.replace(tzinfo=zone), zone)


@settings(max_examples=60, deadline=None)
@given(
    st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2032, 12, 31)),
    st.sampled_from(ZONES),
)
def test_any_moment_in_any_zone(local: datetime, zone_name: str) -> None:
    # The same guarantees at any instant, DST changes included.
    zone = ZoneInfo(zone_name)
    _check_moved(local.replace(tzinfo=zone).astimezone(UTC), zone)
