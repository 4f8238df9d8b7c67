"""The editor's numbers for one week's email, and for each of the twelve weeks up to it.

Everything is counted per reader from three records: the ledger (who was sent the email), the
provider's events as the webhook stored them (delivered, opens, clicks, bounces, complaints,
unsubscribes) and `digest web`'s own records (votes, visits of our own pages). Each count is of
deliveries, so a reader who opens five times is one open, and a click is one (reader, link)
pair, whichever of the provider or `digest web` saw it.

Opens are a floor: a reader whose mail client loads no images is never seen opening, and opens
by a mail client's privacy proxy (Apple Mail Privacy Protection) prove delivery, not reading, so
they are counted apart (`machine_opened`). Clicks include link scanners, which open every link
of some corporate mail; they never vote, since only the button of the vote page does.
Unsubscribes and complaints count the week's recipients whose provider event says so, and those
who left through our own pages after this email arrived and before the next one did.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Self

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from digest.config import Settings
from digest.content.frozen import DigestContent
from digest.engagement.clicks import EmailLinks, pair_key
from digest.engagement.visits import LinkKind
from digest.engagement.votes import (
    Tally,
    content_slugs,
    email_tools,
    sent_digest,
    week_tallies,
)
from digest.links import LinkTemplates
from digest.models import DELIVERY_TABLE as DELIVERY
from digest.models import DIGEST_TABLE as DIGEST
from digest.models import EVENT_TABLE as EVENT
from digest.models import SUBSCRIBER_TABLE as SUBSCRIBER
from digest.models import VISIT_TABLE as VISIT
from digest.models import VOTE_TABLE as VOTE
from digest.providers import PROVIDERS, load
from digest.states import ACCEPTED, DeliveryState, SubscriberStatus, values
from digest.webhooks.base import Engagement
from digest.weeks import IsoWeek

HISTORY_WEEKS = 12
S = DeliveryState
# Event states that prove the email arrived; a provider event of these needs its payload read.
_ARRIVED = (S.DELIVERED, S.OPENED, S.CLICKED, S.UNSUBSCRIBED, S.COMPLAINED)
_READ = (S.DELIVERED, S.OPENED, S.CLICKED)
# Streamed in slices: a week of 100,000 readers has a few hundred thousand events.
_SLICE = 5000

EventReader = Callable[[Mapping[str, Any]], Engagement]


def provider_event_reader() -> EventReader:
    """Reads a stored event with the webhook adapter of each provider (digest/providers.py)."""
    adapters = [load(p.webhook) for p in PROVIDERS.values() if p.webhook is not None]
    nothing = Engagement()

    def read(raw: Mapping[str, Any]) -> Engagement:
        for adapter in adapters:
            found: Engagement = adapter.engagement(raw)
            if found != nothing:
                return found
        return nothing

    return read


@dataclass(frozen=True)
class Sources:
    """What a report reads besides the database: how the email's links were built, and how a
    provider's stored events are read."""

    site_url: str
    link_templates: LinkTemplates
    read_event: EventReader

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        templates = LinkTemplates.from_settings(settings)
        return cls(settings.site_url, templates, provider_event_reader())


@dataclass(frozen=True)
class PairClicks:
    """The clicks of one head-to-head's links: its comparison, its tools' sites, their votes."""

    a: str
    b: str
    a_name: str
    b_name: str
    comparison: int = 0
    tool: int = 0
    vote: int = 0

    @property
    def clicks(self) -> int:
        return self.comparison + self.tool + self.vote

    def as_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "clicks": self.clicks,
            "comparison": self.comparison,
            "tool": self.tool,
            "vote": self.vote,
        }


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass(frozen=True)
class WeekReport:
    """One week's email: its funnel, its clicks and votes, who left."""

    week: str
    subject: str
    sent: int
    delivered: int
    opened: int
    machine_opened: int
    clicked: int
    clicks: dict[str, int]  # (reader, link) clicks by LinkKind
    unsubscribed: int
    complained: int
    bounced: int
    dropped: int
    votes: int
    voters: int
    pairs: tuple[PairClicks, ...] = ()
    tools: tuple[Tally, ...] = ()
    provider_events: bool = False  # whether the provider reported anything of this week
    names: dict[str, str] = field(default_factory=dict)  # the email's tool names, by slug

    @property
    def base(self) -> int:
        """What rates are of: the delivered emails, or the sent ones when the provider reported
        no delivery (the outbox backend, or no webhook)."""
        return self.delivered if self.provider_events and self.delivered else self.sent

    def rates(self) -> dict[str, float | None]:
        """Shares of `base`; None where the provider reported nothing to tell it by."""
        known = self.provider_events
        return {
            "delivered": _share(self.delivered, self.sent) if known else None,
            "opened": _share(self.opened, self.base) if known else None,
            "clicked": _share(self.clicked, self.base),
            "unsubscribed": _share(self.unsubscribed, self.base),
            "complained": _share(self.complained, self.base),
            "bounced": _share(self.bounced, self.sent),
        }

    def summary(self) -> dict[str, Any]:
        """The funnel and its rates: what the twelve-week history keeps of a week."""
        return {
            "week": self.week,
            "sent": self.sent,
            "delivered": self.delivered,
            "opened": self.opened,
            "machine_opened": self.machine_opened,
            "clicked": self.clicked,
            "unsubscribed": self.unsubscribed,
            "complained": self.complained,
            "bounced": self.bounced,
            "votes": self.votes,
            "rates": self.rates(),
        }

    def as_json(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "subject": self.subject,
            "dropped": self.dropped,
            "voters": self.voters,
            "clicks": self.clicks,
            "pairs": [pair.as_dict() for pair in self.pairs],
            "tools": [tally.as_dict() for tally in self.tools],
            "provider_events": self.provider_events,
        }


@dataclass(frozen=True)
class Report:
    """A week's report with the twelve weeks up to it (oldest first; None: no digest sent)."""

    week: WeekReport
    history: tuple[tuple[str, WeekReport | None], ...]
    generated_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            **self.week.as_json(),
            "generated_at": self.generated_at.isoformat(),
            "history": [
                report.summary() if report else {"week": week, "sent": None}
                for week, report in self.history
            ],
        }


@dataclass
class _Facts:
    """What one week's provider events say, per delivery."""

    states: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    human_opens: set[int] = field(default_factory=set)
    machine_opens: set[int] = field(default_factory=set)
    clicks: list[tuple[int, str]] = field(default_factory=list)


def _of_digest(digest_id: int) -> Any:
    return DELIVERY.c.digest_id == digest_id


def _event_facts(connection: Connection, digest_id: int, read: EventReader) -> _Facts:
    facts = _Facts()
    joined = EVENT.join(DELIVERY, DELIVERY.c.id == EVENT.c.delivery_id)
    rows = connection.execute(
        select(EVENT.c.state, EVENT.c.delivery_id)
        .select_from(joined)
        .where(_of_digest(digest_id), EVENT.c.state.is_not(None))
        .distinct()
    )
    for state, delivery_id in rows:
        facts.states[str(state)].add(int(delivery_id))
    streamed = connection.execution_options(yield_per=_SLICE).execute(
        select(EVENT.c.delivery_id, EVENT.c.state, EVENT.c.raw)
        .select_from(joined)
        .where(_of_digest(digest_id), EVENT.c.state.in_([s.value for s in _READ]))
    )
    for delivery_id, state, raw in streamed:
        said = read(raw if isinstance(raw, dict) else {})
        if said.machine_open:
            facts.machine_opens.add(int(delivery_id))
        elif state == S.OPENED:
            facts.human_opens.add(int(delivery_id))
        if said.url:
            facts.clicks.append((int(delivery_id), said.url))
    return facts


def _unique_clicks(
    connection: Connection, digest_id: int, facts: _Facts, links: EmailLinks
) -> set[tuple[int, LinkKind, str]]:
    """Every (reader, link) clicked, whether the provider or `digest web` saw it."""
    clicks = {(did, *links.classify(url)) for did, url in facts.clicks}
    visits = connection.execute(
        select(VISIT.c.delivery_id, VISIT.c.kind, VISIT.c.target)
        .join(DELIVERY, DELIVERY.c.id == VISIT.c.delivery_id)
        .where(_of_digest(digest_id))
    )
    clicks |= {(int(did), LinkKind(kind), str(target)) for did, kind, target in visits}
    return clicks


def _first_arrival(connection: Connection, digest_id: int) -> datetime | None:
    """When the digest's first email left the provider (its held send time, else sent time)."""
    found = connection.execute(
        select(func.min(func.coalesce(DELIVERY.c.send_at, DELIVERY.c.sent_at))).where(
            _of_digest(digest_id)
        )
    ).scalar()
    return found if isinstance(found, datetime) else None


def _left_by_our_pages(connection: Connection, digest_id: int, week: str) -> dict[str, set[int]]:
    """Recipients who left (status unsubscribed or complained) after this email arrived and
    before the next digest did: what no provider event tells of our own unsubscribe pages."""
    found: dict[str, set[int]] = defaultdict(set)
    start = _first_arrival(connection, digest_id)
    if start is None:
        return found
    following = connection.execute(
        select(DIGEST.c.id)
        .where(DIGEST.c.week > week, DIGEST.c.planned_at.is_not(None))
        .order_by(DIGEST.c.week)
        .limit(1)
    ).scalar()
    end = _first_arrival(connection, int(following)) if following is not None else None
    left = [SubscriberStatus.UNSUBSCRIBED.value, SubscriberStatus.COMPLAINED.value]
    conditions = [
        _of_digest(digest_id),
        DELIVERY.c.state.in_(values(ACCEPTED)),
        SUBSCRIBER.c.status.in_(left),
        SUBSCRIBER.c.status_changed_at >= start,
    ]
    if end is not None:
        conditions.append(SUBSCRIBER.c.status_changed_at < end)
    rows = connection.execute(
        select(DELIVERY.c.id, SUBSCRIBER.c.status)
        .join(SUBSCRIBER, SUBSCRIBER.c.id == DELIVERY.c.subscriber_id)
        .where(*conditions)
    )
    for delivery_id, status in rows:
        found[str(status)].add(int(delivery_id))
    return found


def _pair_clicks(
    content: DigestContent, clicks: set[tuple[int, LinkKind, str]]
) -> tuple[PairClicks, ...]:
    counted: dict[tuple[LinkKind, str], int] = defaultdict(int)
    for _delivery, kind, target in clicks:
        counted[(kind, target)] += 1
    return tuple(
        PairClicks(
            a=pair.a.slug,
            b=pair.b.slug,
            a_name=pair.a.name,
            b_name=pair.b.name,
            comparison=counted[(LinkKind.COMPARISON, pair_key(pair))],
            tool=counted[(LinkKind.TOOL, pair.a.slug)] + counted[(LinkKind.TOOL, pair.b.slug)],
            vote=counted[(LinkKind.VOTE, pair.a.slug)] + counted[(LinkKind.VOTE, pair.b.slug)],
        )
        for pair in content.pairs
    )


def _sent(connection: Connection, digest_id: int) -> int:
    return int(
        connection.execute(
            select(func.count()).where(
                _of_digest(digest_id), DELIVERY.c.state.in_(values(ACCEPTED))
            )
        ).scalar_one()
    )


def _votes(connection: Connection, digest_id: int) -> tuple[int, int, set[int]]:
    """Votes cast from the week's email, their voters, and the deliveries they came from."""
    rows = connection.execute(
        select(VOTE.c.subscriber_id, VOTE.c.delivery_id).where(VOTE.c.digest_id == digest_id)
    ).all()
    return len(rows), len({r[0] for r in rows}), {int(r[1]) for r in rows}


def week_report(connection: Connection, *, week: str, sources: Sources) -> WeekReport | None:
    """The week's numbers; None when no digest was sent that week."""
    found = sent_digest(connection, week=week)
    if found is None:
        return None
    digest_id, content = found
    facts = _event_facts(connection, digest_id, sources.read_event)
    links = EmailLinks.of(content, site_url=sources.site_url, templates=sources.link_templates)
    clicks = _unique_clicks(connection, digest_id, facts, links)
    left = _left_by_our_pages(connection, digest_id, week)
    votes, voters, voted_from = _votes(connection, digest_id)
    by_kind: dict[str, int] = {kind.value: 0 for kind in LinkKind}
    for _delivery, kind, _target in clicks:
        by_kind[kind.value] += 1
    clickers = {delivery for delivery, _kind, _target in clicks}
    arrived = set().union(*(facts.states[s.value] for s in _ARRIVED))
    opened = facts.human_opens
    return WeekReport(
        week=week,
        subject=content.subject,
        sent=_sent(connection, digest_id),
        delivered=len(arrived | opened | facts.machine_opens | clickers | voted_from),
        opened=len(opened),
        machine_opened=len(facts.machine_opens - opened),
        clicked=len(clickers),
        clicks=by_kind,
        unsubscribed=len(facts.states[S.UNSUBSCRIBED.value] | left[SubscriberStatus.UNSUBSCRIBED]),
        complained=len(facts.states[S.COMPLAINED.value] | left[SubscriberStatus.COMPLAINED]),
        bounced=len(facts.states[S.BOUNCED.value]),
        dropped=len(facts.states[S.DROPPED.value]),
        votes=votes,
        voters=voters,
        pairs=_pair_clicks(content, clicks),
        tools=tuple(week_tallies(connection, digest_id=digest_id, slugs=content_slugs(content))),
        provider_events=any(facts.states.values()),
        names={slug: tool.card.name for slug, tool in email_tools(content, "").items()},
    )


def history_weeks(week: IsoWeek, count: int = HISTORY_WEEKS) -> list[IsoWeek]:
    """The `count` weeks ending with `week`, oldest first."""
    weeks = [week]
    while len(weeks) < count:
        weeks.append(weeks[-1].previous())
    return weeks[::-1]


def build_report(
    connection: Connection, *, week: IsoWeek, sources: Sources, now: datetime
) -> Report | None:
    """The week's report with its twelve-week history; None when no digest was sent that week."""
    this = week_report(connection, week=str(week), sources=sources)
    if this is None:
        return None
    history = [
        (str(w), this if w == week else week_report(connection, week=str(w), sources=sources))
        for w in history_weeks(week)
    ]
    return Report(week=this, history=tuple(history), generated_at=now)


def latest_sent_weeks(connection: Connection, *, up_to: str, count: int) -> list[str]:
    """The `count` latest weeks with a sent digest, at or before `up_to`, newest first."""
    rows = connection.execute(
        select(DIGEST.c.week)
        .where(DIGEST.c.week <= up_to, DIGEST.c.planned_at.is_not(None))
        .order_by(DIGEST.c.week.desc())
        .limit(count)
    )
    return [str(week) for week in rows.scalars()]
