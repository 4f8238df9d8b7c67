"""Catalog sync: the site's feed fetched (`feed.py`) and imported through the same all-or-nothing
validation as `digest catalog import`, with what it changed and where it came from.

A feed is imported whole or not at all; its HTTP validators and `generated_at` are stored with
the import, in the same transaction, so a `304` later means "the catalog already holds this".
For a week being sent, a feed generated before that week ended is refused: it cannot hold the
week's last tools, and sending from it would look exactly like a quiet week.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from digest.catalog.feed import FeedClient, FeedLocation, Validators
from digest.catalog.importer import ImportReport, import_stream
from digest.db import session_scope
from digest.errors import CatalogFeedError, StaleCatalogError
from digest.models import CatalogFeed
from digest.weeks import IsoWeek

_UTC = ZoneInfo("UTC")
_FEED_REMEDY = (
    "The feed is imported whole or not at all, so fix these records on the site, then run again"
)


@dataclass(frozen=True)
class SyncReport:
    """What one sync did: where from, when the site made the feed, what the catalog gained."""

    source: str  # the address without credentials
    generated_at: datetime | None
    not_modified: bool = False
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    refused: int = 0
    warnings: list[str] = field(default_factory=list)

    def changes(self) -> str:
        if self.not_modified:
            return "not modified since the last sync (HTTP 304): nothing imported"
        return (
            f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged, "
            f"{self.refused} refused"
        )

    def generated(self) -> str:
        return self.generated_at.isoformat() if self.generated_at else "not stated by the feed"


def sync_catalog(
    *,
    engine: Engine,
    client: FeedClient,
    location: FeedLocation,
    week: IsoWeek | None = None,
    zone: ZoneInfo = _UTC,
) -> SyncReport:
    """Fetch the feed and import it; with `week`, refuse a feed not complete for that week."""
    with Session(engine) as session:
        known = _stored(session, location)
        validators = (
            Validators(etag=known.etag, last_modified=known.last_modified) if known else None
        )
    body = client.fetch(location, validators or Validators())
    if body.raw is None:
        if known is None:  # we sent no validators, so a 304 answers nothing we asked
            raise CatalogFeedError(
                f"Catalog sync from {location.shown} failed: the server answered 304 Not "
                "Modified to a request that was not conditional; nothing was imported. Check "
                "the site's feed."
            )
        _check_fresh(known.generated_at, week, zone, location)
        return SyncReport(source=location.shown, generated_at=known.generated_at, not_modified=True)
    with session_scope(engine) as session:
        report = import_stream(
            session=session,
            stream=io.BytesIO(body.raw),
            source=location.shown,
            remedy=_FEED_REMEDY,
            check_generated_at=lambda moment: _check_fresh(moment, week, zone, location),
        )
        _remember(session, location, body.validators, report.generated_at)
    return _report(location, report.generated_at, report)


def _stored(session: Session, location: FeedLocation) -> CatalogFeed | None:
    found = session.exec(select(CatalogFeed).where(CatalogFeed.url == location.shown)).first()
    return found


def _remember(
    session: Session,
    location: FeedLocation,
    validators: Validators,
    generated_at: datetime | None,
) -> None:
    row = _stored(session, location) or CatalogFeed(url=location.shown, synced_at=datetime.now(UTC))
    row.etag = validators.etag
    row.last_modified = validators.last_modified
    row.generated_at = generated_at
    row.synced_at = datetime.now(UTC)
    session.add(row)


def _check_fresh(
    generated_at: datetime | None, week: IsoWeek | None, zone: ZoneInfo, location: FeedLocation
) -> None:
    """A feed that says it was made before `week` ended cannot hold all of the week's tools."""
    if week is None or generated_at is None:
        return
    end = week.window(zone)[1]
    if generated_at < end:
        raise StaleCatalogError(
            f"Catalog sync from {location.shown} refused {week}: the feed was generated at "
            f"{generated_at.isoformat()}, before the week ended at {end.isoformat()}, so it "
            f"is not complete for {week}; nothing was imported or sent. Run again once the "
            "site publishes a newer feed."
        )


def _report(
    location: FeedLocation, generated_at: datetime | None, report: ImportReport
) -> SyncReport:
    return SyncReport(
        source=location.shown,
        generated_at=generated_at,
        added=report.created,
        updated=report.updated,
        unchanged=report.unchanged,
        refused=report.skipped,
        warnings=list(report.warnings),
    )
