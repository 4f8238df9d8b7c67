"""Provider events into the ledger: record each once, move deliveries forward, suppress people.

The provider adapters (digest/webhooks/) translate their payloads into `NormalizedEvent`s; this
module speaks only the project's own vocabulary. A batch is applied with a handful of set-based
statements whatever its size: one INSERT ... ON CONFLICT DO NOTHING ... RETURNING records the
events and tells which are new (providers deliver at least once), one UPDATE per target state
moves deliveries, one UPDATE per suppression status updates subscribers.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection
from sqlmodel import Session

from digest.audience.addresses import email_key
from digest.audience.lifecycle import suppress_many
from digest.db import MAX_BOUND_VALUES, in_chunks, insert_ignore
from digest.models import DELIVERY_TABLE as DELIVERY
from digest.models import EVENT_TABLE as EVENT
from digest.models import SUBSCRIBER_TABLE as SUBSCRIBER
from digest.states import (
    EVENT_RANK,
    EVENTS_MAY_WAIT,
    SUPPRESSION_RANK,
    Cause,
    DeliveryState,
    SubscriberStatus,
    sources_of,
    values,
)
from digest.weeks import utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NormalizedEvent:
    """One provider event in the project's words, with the payload as received."""

    provider_event_id: str  # the provider's unique id of the event: the deduplication key
    provider_event: str  # the provider's own name for it, e.g. "bounce"
    delivery_id: int | None  # our delivery row, from the custom args; None when absent
    state: DeliveryState | None  # the state it proves; None: kept for the record only
    suppress_as: SubscriberStatus | None  # what it makes of the subscriber, if anything
    # The recipient, checked against the delivery's subscriber and used to find them when the
    # delivery is unknown; "" for an event that names no recipient (it matches no one), None
    # from a source that reports no addresses at all.
    email: str | None
    occurred_at: datetime | None
    raw: dict[str, Any]


@dataclass(frozen=True)
class EventSummary:
    """What one batch did."""

    received: int
    recorded: int  # new events stored
    duplicates: int  # seen before (or twice in the batch) and ignored
    unknown_delivery: int  # new events naming no delivery row we have
    moved: int  # deliveries whose state moved forward
    suppressed: int  # subscribers whose status became a (stronger) suppression
    # New events naming a delivery whose subscriber's address is not the event's: kept for the
    # record, never applied (another installation's ids, or a forwarded mail's events).
    mismatched_email: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "received": self.received,
            "recorded": self.recorded,
            "duplicates": self.duplicates,
            "unknown_delivery": self.unknown_delivery,
            "mismatched_email": self.mismatched_email,
            "moved": self.moved,
            "suppressed": self.suppressed,
        }


def movable_from(target: DeliveryState) -> list[str]:
    """The states an event may move to `target` (the state machine's event moves).

    Any provider event proves that an `uncertain` send was accepted, so `uncertain` moves even to
    `sent`. Rows the sender still owns (`pending`, `sending`) are never touched: the event stays
    recorded until they settle.
    """
    return values(sources_of(target, Cause.EVENT))


def target_states(
    proofs: Iterable[tuple[int | None, DeliveryState | None]],
) -> dict[int, DeliveryState]:
    """The highest-ranked state each delivery's (delivery id, state) pairs prove, in any order."""
    best: dict[int, DeliveryState] = {}
    for delivery_id, state in proofs:
        if delivery_id is None or state is None:
            continue
        current = best.get(delivery_id)
        if current is None or EVENT_RANK[state] > EVENT_RANK[current]:
            best[delivery_id] = state
    return best


def _move_forward(connection: Connection, targets: dict[int, DeliveryState]) -> int:
    """Move each delivery to its target state where that is forward; one UPDATE per state."""
    by_target: dict[DeliveryState, list[int]] = defaultdict(list)
    for delivery_id, state in targets.items():
        by_target[state].append(delivery_id)
    now = utcnow()
    moved = 0
    for state, ids in by_target.items():
        for some in in_chunks(ids, MAX_BOUND_VALUES):
            moved += _rowcount(
                connection.execute(
                    update(DELIVERY)
                    .where(DELIVERY.c.id.in_(some), DELIVERY.c.state.in_(movable_from(state)))
                    .values(state=state.value, updated_at=now)
                )
            )
    return moved


def apply_recorded(connection: Connection, *, digest_id: int) -> int:
    """Apply stored events that came while their rows were not yet settled; rows moved.

    An event for a row still `sending` is recorded but not applied: the sender owns the row. Once
    the row is `sent`, or `uncertain` because its run died, those events count. An `uncertain`
    row that an event proves accepted then leaves `uncertain`, so `--resend-uncertain` does not
    mail that subscriber a second copy.
    """
    rows = connection.execute(
        select(EVENT.c.delivery_id, EVENT.c.state)
        .join(DELIVERY, DELIVERY.c.id == EVENT.c.delivery_id)
        .where(
            DELIVERY.c.digest_id == digest_id,
            DELIVERY.c.state.in_(values(EVENTS_MAY_WAIT)),
            EVENT.c.state.is_not(None),
        )
    )
    return _move_forward(
        connection, target_states((int(did), DeliveryState(state)) for did, state in rows)
    )


def strongest(pairs: Iterable[tuple[int, SubscriberStatus]]) -> dict[int, SubscriberStatus]:
    """The strongest suppression per subscriber."""
    best: dict[int, SubscriberStatus] = {}
    for subscriber_id, status in pairs:
        current = best.get(subscriber_id)
        if current is None or SUPPRESSION_RANK[status] > SUPPRESSION_RANK[current]:
            best[subscriber_id] = status
    return best


def first_of_each(events: Sequence[NormalizedEvent]) -> list[NormalizedEvent]:
    """The batch without repeats of a provider event id, first occurrence kept."""
    seen: set[str] = set()
    unique = []
    for event in events:
        if event.provider_event_id not in seen:
            seen.add(event.provider_event_id)
            unique.append(event)
    return unique


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def apply_events(*, session: Session, events: list[NormalizedEvent]) -> EventSummary:
    """Record a batch of events and apply the new ones, in the caller's transaction."""
    unique = first_of_each(events)
    if not unique:
        return EventSummary(len(events), 0, len(events), 0, 0, 0)
    connection = session.connection()
    owners, keys = _owners(connection, unique)
    strays = _mismatched(unique, owners, keys)
    fresh = _record_new(connection, unique, owners, strays)
    known = [e for e in fresh if e.delivery_id in owners and e.provider_event_id not in strays]
    skipped = len(fresh) - len(known) - len([e for e in fresh if e.delivery_id not in owners])
    if skipped:
        log.warning(
            "skipped %d webhook event(s) whose email is not the address of the delivery they "
            "name: recorded, not applied",
            skipped,
        )
    moved = _move_forward(connection, target_states((e.delivery_id, e.state) for e in known))
    suppressions = [
        (owners[e.delivery_id], e.suppress_as)
        for e in known
        if e.suppress_as is not None and e.delivery_id is not None
    ]
    suppressions += _by_address(
        connection, [e for e in fresh if e.delivery_id not in owners and e.suppress_as is not None]
    )
    return EventSummary(
        received=len(events),
        recorded=len(fresh),
        duplicates=len(events) - len(fresh),
        unknown_delivery=len(fresh) - len(known) - skipped,
        mismatched_email=skipped,
        moved=moved,
        suppressed=_suppress(session, suppressions),
    )


def _mismatched(
    events: list[NormalizedEvent], owners: dict[int, int], keys: dict[int, str]
) -> set[str]:
    """The provider ids of events that name a delivery of ours for another address (or none)."""
    return {
        e.provider_event_id
        for e in events
        if e.delivery_id in owners and not _same_address(e, keys)
    }


def _same_address(event: NormalizedEvent, keys: dict[int, str]) -> bool:
    """Whether the event's email is the address of the subscriber its delivery was for."""
    assert event.delivery_id is not None
    return event.email is None or email_key(event.email) == keys[event.delivery_id]


def _owners(
    connection: Connection, events: list[NormalizedEvent]
) -> tuple[dict[int, int], dict[int, str]]:
    """For the events' delivery ids that name a row we have: delivery id -> subscriber id, and
    delivery id -> the subscriber's address key."""
    wanted = sorted({e.delivery_id for e in events if e.delivery_id is not None})
    if not wanted:
        return {}, {}
    owners, keys = {}, {}
    for some in in_chunks(wanted, MAX_BOUND_VALUES):
        rows = connection.execute(
            select(DELIVERY.c.id, DELIVERY.c.subscriber_id, SUBSCRIBER.c.email_key)
            .join(SUBSCRIBER, SUBSCRIBER.c.id == DELIVERY.c.subscriber_id)
            .where(DELIVERY.c.id.in_(some))
        )
        for did, sid, key in rows:
            owners[int(did)], keys[int(did)] = int(sid), str(key)
    return owners, keys


def owners_id(event: NormalizedEvent, owners: dict[int, int]) -> int | None:
    """The event's delivery id if it names a row we have (the column is a foreign key)."""
    return event.delivery_id if event.delivery_id in owners else None


def _record_new(
    connection: Connection,
    events: list[NormalizedEvent],
    owners: dict[int, int],
    mismatched: set[str],
) -> list[NormalizedEvent]:
    """Store the events; those not stored before (providers deliver at least once). An event
    whose address does not match its delivery is stored without its delivery and state, so
    that nothing (`apply_recorded` included) ever applies it."""
    now = utcnow()
    rows = [
        {
            "provider_event_id": e.provider_event_id,
            # An id we do not have is kept in the raw payload only: the column is a foreign key.
            "delivery_id": None if e.provider_event_id in mismatched else owners_id(e, owners),
            "provider_event": e.provider_event,
            "state": None
            if e.state is None or e.provider_event_id in mismatched
            else e.state.value,
            "occurred_at": e.occurred_at,
            "received_at": now,
            "raw": e.raw,
        }
        for e in events
    ]
    statement = insert_ignore(connection, EVENT, key=["provider_event_id"])
    inserted: set[str] = set()
    # Seven values a row: a signed batch of 40,000 small events went past SQLite's cap at once.
    for some in in_chunks(rows, MAX_BOUND_VALUES // len(rows[0])):
        done = connection.execute(statement.values(some).returning(EVENT.c.provider_event_id))
        inserted.update(done.scalars())
    return [e for e in events if e.provider_event_id in inserted]


def _suppress(session: Session, suppressions: list[tuple[int, SubscriberStatus]]) -> int:
    """Apply the strongest suppression per subscriber; how many changed status."""
    by_status: dict[SubscriberStatus, list[int]] = defaultdict(list)
    for subscriber_id, status in strongest(suppressions).items():
        by_status[status].append(subscriber_id)
    return sum(
        suppress_many(session=session, subscriber_ids=ids, status=status)
        for status, ids in by_status.items()
    )


def _by_address(
    connection: Connection, events: list[NormalizedEvent]
) -> list[tuple[int, SubscriberStatus]]:
    """Suppressions of events with no delivery row (e.g. a confirmation email), by address."""
    wanted: dict[str, list[SubscriberStatus]] = defaultdict(list)
    for event in events:
        if event.email and event.suppress_as is not None:
            wanted[email_key(event.email)].append(event.suppress_as)
    if not wanted:
        return []
    found = []
    for some in in_chunks(sorted(wanted), MAX_BOUND_VALUES):
        rows = connection.execute(
            select(SUBSCRIBER.c.id, SUBSCRIBER.c.email_key).where(SUBSCRIBER.c.email_key.in_(some))
        )
        found += [(int(sid), status) for sid, key in rows for status in wanted[key]]
    return found
