"""Our own link visits: the clicks no provider tracks, counted by `digest web` itself.

The email's links to our own pages (its Ship/Skip links, the comparison pages, the archive) are
kept out of the provider's click tracking and carry the delivery's vote token, so `digest web`
knows whose click it was. Each (delivery, link) is kept once, at its first visit: the report
counts readers and links, not reloads. A token is a reader's key to their own email's links
only: carried to another comparison or another week's archive (edited by hand, or a page
opened from the archive), it counts nothing, or the report's clicks would outnumber its pairs'.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from functools import cache
from typing import Any

from sqlalchemy import bindparam, exists, select
from sqlalchemy.engine import Connection

from digest.db import UTCDateTime
from digest.engagement.upserts import dialect_insert
from digest.engagement.votes import Ballot, EmailTool
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


def in_email(kind: LinkKind, target: str, ballot: Ballot, tools: dict[str, EmailTool]) -> bool:
    """Whether the email `ballot` names held this page's link: its own week's archive, or one
    of its comparisons (a vote link's tool is checked where the vote page finds it)."""
    if kind is LinkKind.ARCHIVE:
        return target == ballot.week
    path = f"/compare/{target}"
    return kind is LinkKind.COMPARISON and any(
        tool.pair is not None and tool.pair.compare_path == path for tool in tools.values()
    )


def record_visit(
    connection: Connection, *, delivery_id: int, kind: LinkKind, target: str, now: datetime
) -> bool:
    """Keep the first visit of one delivery's link; False if it was kept before, or if the
    delivery is gone (a recalled week's rows are deleted)."""
    assert kind in VISITED
    values = {"delivery_id": delivery_id, "kind": kind.value, "target": target[:700], "now": now}
    return bool(connection.execute(_insert(connection.dialect.name), values).first())


@cache
def _insert(dialect: str) -> Any:
    """INSERT of a first visit, if its delivery still exists (built once per dialect: it runs
    on every vote page of a burst)."""
    columns = ("delivery_id", "kind", "target")
    row = select(
        *(bindparam(name, type_=VISIT.c[name].type) for name in columns),
        bindparam("now", type_=UTCDateTime),
    ).where(exists().where(DELIVERY.c.id == bindparam("delivery_id")))
    statement = dialect_insert(dialect, VISIT).from_select([*columns, "visited_at"], row)
    return statement.on_conflict_do_nothing(index_elements=list(columns)).returning(VISIT.c.id)
