"""Our own link visits: the clicks no provider tracks, counted by `digest web` itself.

The email's links to our own pages (its Ship/Skip links, the comparison pages, the archive) are
kept out of the provider's click tracking and carry the delivery's vote token, so `digest web`
knows whose click it was. Each (delivery, link) is kept once, at its first visit: the report
counts readers and links, not reloads.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import exists, literal, select
from sqlalchemy.engine import Connection

from digest.db import UTCDateTime, insert_ignore
from digest.models import DELIVERY_TABLE as DELIVERY
from digest.models import VISIT_TABLE as VISIT


class LinkKind(StrEnum):
    """Where a link of the email leads."""

    COMPARISON = "comparison"  # a head-to-head page ("Read the full comparison")
    TOOL = "tool"  # a tool's own site, or its page on the comparison site
    VOTE = "vote"  # a Ship or Skip link
    ARCHIVE = "archive"  # "View in browser"
    OTHER = "other"  # anything else a provider saw clicked


# The kinds `digest web` serves and records itself (the table's CHECK constraint).
VISITED = (LinkKind.COMPARISON, LinkKind.VOTE, LinkKind.ARCHIVE)


def record_visit(
    connection: Connection, *, delivery_id: int, kind: LinkKind, target: str, now: datetime
) -> bool:
    """Keep the first visit of one delivery's link; False if it was kept before, or if the
    delivery is gone (a recalled week's rows are deleted)."""
    assert kind in VISITED
    row = select(
        literal(delivery_id), literal(kind.value), literal(target[:700]), literal(now, UTCDateTime)
    ).where(exists().where(DELIVERY.c.id == delivery_id))
    statement = insert_ignore(connection, VISIT, key=["delivery_id", "kind", "target"])
    statement = statement.from_select(["delivery_id", "kind", "target", "visited_at"], row)
    return bool(connection.execute(statement.returning(VISIT.c.id)).first())
