"""Writing checked catalog records: one batch of tools and their reviews in a few statements.

A batch of up to `BATCH_SIZE` records costs one SELECT (which slugs exist, with their content
hash), one multi-row INSERT of the new tools returning their ids, one executemany UPDATE of the
changed ones, one DELETE of the changed tools' old reviews and one INSERT of the reviews. An
unchanged record (same content hash) writes nothing. Everything runs in the caller's
transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlmodel import Session

from digest.models import Review, Tool

if TYPE_CHECKING:
    from digest.catalog.importer import ToolIn

BATCH_SIZE = 1000
_TOOLS: Table = Tool.__table__  # type: ignore[attr-defined]
_REVIEWS: Table = Review.__table__  # type: ignore[attr-defined]
_TOOL_COLUMNS = (
    "name",
    "vendor",
    "category",
    "tagline",
    "description",
    "url",
    "pricing",
    "license",
    "open_weights",
    "tags",
    "best_for",
    "added_at",
    "community_ship",
    "community_skip",
    "content_hash",
    "imported_at",
)


@dataclass(frozen=True)
class Outcomes:
    """How many records of a batch were created, updated, or already as the file says."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0


def _values(tool: ToolIn, content_hash: str, now: datetime) -> dict[str, Any]:
    community = tool.community
    return {
        "name": tool.name,
        "vendor": tool.vendor,
        "category": tool.category,
        "tagline": tool.tagline,
        "description": tool.description,
        "url": tool.url,
        "pricing": tool.pricing,
        "license": tool.license,
        "open_weights": tool.open_weights,
        "tags": list(tool.tags),
        "best_for": tool.best_for,
        "added_at": tool.added_at,
        "community_ship": community.ship if community else None,
        "community_skip": community.skip if community else None,
        "content_hash": content_hash,
        "imported_at": now,
    }


def _review_rows(tool_id: int, tool: ToolIn) -> list[dict[str, Any]]:
    return [
        {
            "tool_id": tool_id,
            "position": position,
            "reviewer": review.reviewer,
            "lens": review.lens,
            "verdict": review.verdict,
            "score": review.score,
            "quote": review.quote,
        }
        for position, review in enumerate(tool.reviews)
    ]


def _insert_new(session: Session, new: list[tuple[ToolIn, str]], now: datetime) -> dict[str, int]:
    """Insert the new tools; their ids by slug."""
    if not new:
        return {}
    rows = [{"slug": tool.slug, **_values(tool, digest, now)} for tool, digest in new]
    statement = insert(_TOOLS).returning(_TOOLS.c.id, _TOOLS.c.slug, sort_by_parameter_order=True)
    return {slug: int(tool_id) for tool_id, slug in session.execute(statement, rows)}


def _update_changed(
    session: Session, changed: list[tuple[int, ToolIn, str]], now: datetime
) -> None:
    if not changed:
        return
    statement = (
        update(_TOOLS)
        .where(_TOOLS.c.id == bindparam("tool_id"))
        .values(
            {name: bindparam(f"new_{name}", type_=_TOOLS.c[name].type) for name in _TOOL_COLUMNS}
        )
    )
    rows = [
        {"tool_id": tool_id, **{f"new_{k}": v for k, v in _values(tool, digest, now).items()}}
        for tool_id, tool, digest in changed
    ]
    session.connection().execute(statement, rows)
    ids = [tool_id for tool_id, _, _ in changed]
    session.execute(delete(_REVIEWS).where(_REVIEWS.c.tool_id.in_(ids)))


def upsert_batch(session: Session, tools: Sequence[ToolIn], now: datetime) -> Outcomes:
    """Create or update the batch's tools by slug, reviews replaced with the tool."""
    slugs = [tool.slug for tool in tools]
    stored = {
        slug: (int(tool_id), content_hash)
        for tool_id, slug, content_hash in session.execute(
            select(_TOOLS.c.id, _TOOLS.c.slug, _TOOLS.c.content_hash).where(
                _TOOLS.c.slug.in_(slugs)
            )
        )
    }
    new: list[tuple[ToolIn, str]] = []
    changed: list[tuple[int, ToolIn, str]] = []
    for tool in tools:
        digest = tool.content_hash()
        known = stored.get(tool.slug)
        if known is None:
            new.append((tool, digest))
        elif known[1] != digest:
            changed.append((known[0], tool, digest))
    ids = _insert_new(session, new, now)
    _update_changed(session, changed, now)
    reviews = [row for tool, _ in new for row in _review_rows(ids[tool.slug], tool)]
    reviews += [row for tool_id, tool, _ in changed for row in _review_rows(tool_id, tool)]
    if reviews:
        session.execute(insert(_REVIEWS), reviews)
    return Outcomes(
        created=len(new), updated=len(changed), unchanged=len(tools) - len(new) - len(changed)
    )
