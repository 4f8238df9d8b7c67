"""Before sending: the week's content composed (or read back frozen), rendered per variant, and
every recipient planned."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Self
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine
from sqlmodel import Session

from digest.catalog.importer import load_tools
from digest.config import Settings
from digest.content.compose import filter_for_categories
from digest.content.frozen import DigestContent
from digest.content.selection import select_week
from digest.delivery import ledger
from digest.editorial.applying import WeekFacts, catalog_weeks, compose_edited
from digest.editorial.edits import load_edits
from digest.errors import ContentTooLargeError, TemplateError
from digest.links import LinkTemplates
from digest.render.variant import (
    GMAIL_CLIP_BYTES,
    RenderedVariant,
    clipped_by_gmail,
    render_variant,
)
from digest.weeks import IsoWeek


@dataclass(frozen=True)
class Edition:
    """What composing and rendering need besides the catalog: the week's zone and the site."""

    zone: ZoneInfo
    site_url: str
    postal_address: str
    link_templates: LinkTemplates = field(default_factory=LinkTemplates)

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(
            zone=settings.zone,
            site_url=settings.site_url,
            postal_address=settings.postal_address,
            link_templates=LinkTemplates.from_settings(settings),
        )


@dataclass(frozen=True)
class PreparedDigest:
    """The week's content, and its digest row when it has been frozen."""

    week: str
    content: DigestContent
    digest_id: int | None
    frozen_earlier: bool


def week_facts(engine: Engine, edition: Edition, week: IsoWeek) -> WeekFacts:
    """The week's selection from the catalog as it is now, and the match-ups already sent."""
    with Session(engine) as session:
        tools = load_tools(session)
    with engine.connect() as connection:
        history = ledger.previous_matchups(connection, before_week=str(week))
    selection = select_week(tools, week=week, zone=edition.zone)
    # A match-up on record under a since-merged duplicate slug still counts as already sent.
    return WeekFacts(
        selection=selection,
        history=selection.canonical_matchups(history),
        catalog_weeks=catalog_weeks(tools, edition.zone),
    )


def compute_content(engine: Engine, edition: Edition, week: IsoWeek) -> DigestContent:
    """Select the week's tools, pair them and compose the content, from the catalog as it is now,
    with the editor's edits of the week applied."""
    facts = week_facts(engine, edition, week)
    with engine.connect() as connection:
        edits = load_edits(connection, str(week))
    content, _ = compose_edited(facts, edits, site_url=edition.site_url, zone=edition.zone)
    return content


def frozen_content(engine: Engine, week: IsoWeek) -> PreparedDigest | None:
    """The content stored for `week`, if a run already froze it."""
    with engine.connect() as connection:
        row = ledger.find_digest(connection, str(week))
    if row is None:
        return None
    return PreparedDigest(
        week=str(week),
        content=DigestContent.model_validate(row["content"]),
        digest_id=int(row["id"]),
        frozen_earlier=True,
    )


def prepare_digest(
    engine: Engine, edition: Edition, week: IsoWeek, *, freeze: bool
) -> PreparedDigest:
    """The content to send for `week`: the frozen copy if there is one, else freshly composed.

    With `freeze`, fresh non-empty content is stored so every later run and preview reuses it.
    """
    existing = frozen_content(engine, week)
    if existing is not None:
        return existing
    content = compute_content(engine, edition, week)
    if not freeze or content.is_empty:
        return PreparedDigest(week=str(week), content=content, digest_id=None, frozen_earlier=False)
    must_render(edition, content, week)
    with engine.begin() as connection:
        row = ledger.freeze_digest(
            connection,
            week=str(week),
            subject=content.subject,
            content=content.model_dump(mode="json"),
        )
    stored = DigestContent.model_validate(row["content"])
    return PreparedDigest(
        week=str(week), content=stored, digest_id=int(row["id"]), frozen_earlier=False
    )


def must_render(edition: Edition, content: DigestContent, week: IsoWeek) -> None:
    """Freeze only content that renders, and fits: a week frozen broken could never be sent.

    The every-category variant is the largest; every other variant holds a part of it.
    """
    try:
        full = render_for_categories(edition, content, [])
    except TemplateError as broken:
        raise TemplateError(
            f"The digest of {week} was not frozen, because its content does not render: "
            f"{broken} If catalog text caused it, fix that record and import the catalog "
            "again; nothing was sent."
        ) from None
    if full is not None and clipped_by_gmail(full.html):
        size = len(full.html.encode())
        raise ContentTooLargeError(
            f"The digest of {week} was not frozen: its HTML is {size / 1024:.0f} KB, and Gmail "
            f"clips mail past {GMAIL_CLIP_BYTES // 1024} KB, hiding the unsubscribe link and "
            "the postal address. Shorten the longest catalog texts (descriptions, quotes) or "
            "exclude tools, import the catalog again, and run again; nothing was sent."
        )


def refreeze(engine: Engine, week: IsoWeek) -> bool:
    """Drop the week's frozen digest if nobody can hold it yet; True if there was one."""
    with engine.begin() as connection:
        return ledger.discard_unsent(connection, week=str(week))


def render_for_categories(
    edition: Edition, content: DigestContent, categories: list[str]
) -> RenderedVariant | None:
    """The rendered variant for a category set; None when it would show nothing."""
    variant = filter_for_categories(content, categories)
    if variant is None:
        return None
    return render_variant(
        variant,
        site_url=edition.site_url,
        postal_address=edition.postal_address,
        link_templates=edition.link_templates,
    )


def plan(engine: Engine, edition: Edition, prepared: PreparedDigest) -> ledger.PlanSummary:
    """Plan every active subscriber of the frozen digest (once; later calls add nobody)."""
    assert prepared.digest_id is not None
    return ledger.plan_recipients(
        engine,
        digest_id=prepared.digest_id,
        render_variant=lambda cats: render_for_categories(edition, prepared.content, cats),
    )


def dry_run_recipients(engine: Engine, content: DigestContent) -> dict[str, int]:
    """For a dry run: how many active subscribers would get mail, and how many be skipped."""
    with engine.connect() as connection:
        counts = ledger.active_by_variant(connection)
    shows = {
        key: filter_for_categories(content, key.split(";") if key else []) is not None
        for key in counts
    }
    return {
        "would_send": sum(n for key, n in counts.items() if shows[key]),
        "would_skip": sum(n for key, n in counts.items() if not shows[key]),
        "variants": sum(shows.values()),
    }
