"""Readers' ship/skip votes: the email a vote link names, what it may vote on, the tallies.

A vote link carries a signed token naming one delivery (`digest.links.Links.vote_token`), so it
votes only on the tools of that delivery's email: its digest's frozen content cut for its
variant's categories, exactly what the subscriber was sent. A delivery that cannot have reached
anyone (never sent, refused, skipped) has no email to vote from. The subscriber's status does
not matter: a reader who unsubscribed still read that week's email.

One vote per subscriber and tool: a later vote replaces the earlier one and counts for the week
of the email it was cast from. Every statement is short and single-purpose (one upsert, one
grouped count), so a burst of votes never holds a lock the sender's claims wait on for long. The
statements a vote runs are built once, with bound parameters: building them per request was a
tenth of the web app's CPU per vote in the burst benchmark (bench/bench_votes.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import cache
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.engine import Connection
from sqlmodel import col

from digest.content.compose import filter_for_categories
from digest.content.frozen import DigestContent, PairCard, ToolCard
from digest.db import UTCDateTime
from digest.engagement.upserts import dialect_insert
from digest.models import DELIVERY_TABLE as DELIVERY
from digest.models import DIGEST_TABLE as DIGEST
from digest.models import VARIANT_TABLE as VARIANT
from digest.models import VOTE_TABLE as VOTE
from digest.models import Tool
from digest.states import MAY_HAVE_REACHED, values


class Choice(StrEnum):
    SHIP = "ship"
    SKIP = "skip"


@dataclass(frozen=True)
class Ballot:
    """One delivery's email, as a vote link names it."""

    delivery_id: int
    subscriber_id: int
    digest_id: int
    week: str
    # The variant's key: its categories joined by ";" ("" for every category).
    variant_key: str


@dataclass(frozen=True)
class EmailTool:
    """A tool as one email showed it, with the head-to-head it stood in (None: also new)."""

    card: ToolCard
    pair: PairCard | None


@dataclass(frozen=True)
class Tally:
    """A tool's votes: ship and skip; every voter counts once, so `voters` is their sum."""

    slug: str
    ship: int = 0
    skip: int = 0

    @property
    def voters(self) -> int:
        return self.ship + self.skip

    @property
    def ship_share(self) -> float | None:
        return self.ship / self.voters if self.voters else None

    def as_dict(self) -> dict[str, Any]:
        return {"slug": self.slug, "ship": self.ship, "skip": self.skip, "voters": self.voters}


_FIND_BALLOT = (
    select(DELIVERY.c.subscriber_id, DELIVERY.c.digest_id, DIGEST.c.week, VARIANT.c.key)
    .join(DIGEST, DIGEST.c.id == DELIVERY.c.digest_id)
    .join(VARIANT, VARIANT.c.id == DELIVERY.c.variant_id)
    .where(
        DELIVERY.c.id == bindparam("delivery_id"),
        DELIVERY.c.state.in_(values(MAY_HAVE_REACHED)),
    )
)
_CURRENT_CHOICE = select(VOTE.c.choice).where(
    VOTE.c.subscriber_id == bindparam("subscriber_id"), VOTE.c.tool_slug == bindparam("slug")
)
_TOOL_TALLY = (
    select(VOTE.c.choice, func.count())
    .where(VOTE.c.tool_slug == bindparam("slug"))
    .group_by(VOTE.c.choice)
)


def find_ballot(connection: Connection, *, delivery_id: int) -> Ballot | None:
    """The email of `delivery_id`, if it may have reached its subscriber; else None."""
    row = connection.execute(_FIND_BALLOT, {"delivery_id": delivery_id}).first()
    if row is None:
        return None
    return Ballot(delivery_id, int(row[0]), int(row[1]), str(row[2]), str(row[3]))


def sent_digest(connection: Connection, *, week: str) -> tuple[int, DigestContent] | None:
    """The id and frozen content of the week's digest, if it was sent (planned)."""
    row = connection.execute(
        select(DIGEST.c.id, DIGEST.c.content).where(
            DIGEST.c.week == week, DIGEST.c.planned_at.is_not(None)
        )
    ).first()
    if row is None or not isinstance(row[1], dict):
        return None
    return int(row[0]), DigestContent.model_validate(row[1])


def digest_content(connection: Connection, *, digest_id: int) -> DigestContent | None:
    """A digest's frozen content; None if the digest is gone."""
    stored = connection.execute(
        select(DIGEST.c.content).where(DIGEST.c.id == digest_id)
    ).scalar_one_or_none()
    return DigestContent.model_validate(stored) if isinstance(stored, dict) else None


def email_tools(content: DigestContent, variant_key: str) -> dict[str, EmailTool]:
    """Every tool one variant of the email showed, by slug, in the order it showed them."""
    variant = filter_for_categories(content, [c for c in variant_key.split(";") if c])
    shown: dict[str, EmailTool] = {}
    if variant is None:
        return shown
    for pair in variant.pairs:
        for card in (pair.a, pair.b):
            shown.setdefault(card.slug, EmailTool(card, pair))
    for card in variant.also_new:
        shown.setdefault(card.slug, EmailTool(card, None))
    return shown


class EmailToolsCache:
    """The tools of the emails that links name, by (digest id, variant key): frozen content never
    changes, so a burst of votes or clicks on one email reads and filters it once."""

    def __init__(self, limit: int = 256) -> None:
        self._limit = limit
        self._tools: dict[tuple[int, str], dict[str, EmailTool]] = {}

    def tools(self, connection: Connection, ballot: Ballot) -> dict[str, EmailTool]:
        key = (ballot.digest_id, ballot.variant_key)
        cached = self._tools.get(key)
        if cached is None:
            content = digest_content(connection, digest_id=ballot.digest_id)
            cached = email_tools(content, ballot.variant_key) if content else {}
            if len(self._tools) >= self._limit:
                self._tools.clear()
            self._tools[key] = cached
        return cached


def current_choice(connection: Connection, *, subscriber_id: int, slug: str) -> Choice | None:
    """The subscriber's vote on a tool so far, from whichever email it was cast."""
    found = connection.execute(
        _CURRENT_CHOICE, {"subscriber_id": subscriber_id, "slug": slug}
    ).scalar_one_or_none()
    return Choice(found) if found is not None else None


@cache
def _upsert(dialect: str) -> Any:
    """INSERT of a vote that replaces the subscriber's earlier one on the tool, for `dialect`."""
    names = ("subscriber_id", "tool_slug", "choice", "delivery_id", "digest_id")
    values: dict[str, Any] = {name: bindparam(name) for name in names}
    values["first_voted_at"] = values["voted_at"] = bindparam("now", type_=UTCDateTime)
    statement = dialect_insert(dialect, VOTE).values(values)
    replaced = ("choice", "delivery_id", "digest_id", "voted_at")
    return statement.on_conflict_do_update(
        index_elements=["subscriber_id", "tool_slug"],
        set_={name: statement.excluded[name] for name in replaced},
    )


def cast_vote(
    connection: Connection, *, ballot: Ballot, slug: str, choice: Choice, now: datetime
) -> None:
    """Record the vote, replacing the subscriber's earlier one on the tool: one statement."""
    connection.execute(
        _upsert(connection.dialect.name),
        {
            "subscriber_id": ballot.subscriber_id,
            "tool_slug": slug,
            "choice": choice.value,
            "delivery_id": ballot.delivery_id,
            "digest_id": ballot.digest_id,
            "now": now,
        },
    )


def _tallies(connection: Connection, *conditions: Any) -> dict[str, Tally]:
    rows = connection.execute(
        select(VOTE.c.tool_slug, VOTE.c.choice, func.count())
        .where(*conditions)
        .group_by(VOTE.c.tool_slug, VOTE.c.choice)
    )
    counts: dict[str, dict[str, int]] = {}
    for slug, choice, n in rows:
        counts.setdefault(str(slug), {})[str(choice)] = int(n)
    return {
        slug: Tally(slug, ship=c.get(Choice.SHIP, 0), skip=c.get(Choice.SKIP, 0))
        for slug, c in counts.items()
    }


def tool_tally(connection: Connection, *, slug: str) -> Tally:
    """A tool's running tally: every vote on it, from every week's email."""
    counts = {str(c): int(n) for c, n in connection.execute(_TOOL_TALLY, {"slug": slug})}
    return Tally(slug, ship=counts.get(Choice.SHIP, 0), skip=counts.get(Choice.SKIP, 0))


def week_tallies(connection: Connection, *, digest_id: int, slugs: list[str]) -> list[Tally]:
    """The votes cast from one week's email on each of `slugs` (its tools), by slug."""
    found = _tallies(connection, VOTE.c.digest_id == digest_id)
    return [found.get(slug, Tally(slug)) for slug in sorted(set(slugs) | set(found))]


def overall_tallies(connection: Connection) -> list[Tally]:
    """Every tool's running tally, by slug: each catalog tool (none yet: 0 and 0) and each tool
    voted on."""
    found = _tallies(connection)
    catalog = {str(slug) for slug in connection.execute(select(col(Tool.slug))).scalars()}
    return [found.get(slug, Tally(slug)) for slug in sorted(catalog | set(found))]


def tool_name(connection: Connection, *, slug: str) -> str | None:
    """The catalog's name of a tool; None for a slug the catalog does not hold."""
    found = connection.execute(
        select(col(Tool.name)).where(col(Tool.slug) == slug)
    ).scalar_one_or_none()
    return str(found) if found is not None else None


def content_slugs(content: DigestContent) -> list[str]:
    """Every tool the week's email showed, whatever the variant."""
    return list(email_tools(content, ""))
