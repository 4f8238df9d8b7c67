"""The one vocabulary of delivery and subscriber states, and which moves between them are allowed.

Provider words (SendGrid's `bounce`, `spamreport`, ...) are translated to these at the edge,
in `digest/webhooks/sendgrid.py`; nothing inside speaks a provider's language.
"""

from __future__ import annotations

from enum import StrEnum


class DeliveryState(StrEnum):
    """Where one (digest, subscriber) delivery stands."""

    PENDING = "pending"  # planned, not yet claimed (or handed back after a transient error)
    SENDING = "sending"  # claimed by a batch, HTTP call under way
    SENT = "sent"  # the provider accepted it (202)
    FAILED = "failed"  # the provider refused it for good (400), reason kept
    UNCERTAIN = "uncertain"  # found in `sending` after its run died: may or may not be accepted
    SKIPPED = "skipped"  # the subscriber's categories had nothing new this week
    SUPPRESSED = "suppressed"  # unsubscribed, bounced or complained after planning, before sending
    # Provider events, from the event webhook.
    DEFERRED = "deferred"
    DELIVERED = "delivered"
    OPENED = "opened"
    CLICKED = "clicked"
    DROPPED = "dropped"
    BOUNCED = "bounced"
    UNSUBSCRIBED = "unsubscribed"
    COMPLAINED = "complained"


# States a rerun must never send again.
FINAL_FOR_SENDING = frozenset(set(DeliveryState) - {DeliveryState.PENDING})

# Rank of the post-send states: an event never moves a row to a lower rank, so a late
# `delivered` after `bounced` leaves `bounced`.
EVENT_RANK: dict[DeliveryState, int] = {
    DeliveryState.SENT: 0,
    DeliveryState.UNCERTAIN: 0,
    DeliveryState.DEFERRED: 1,
    DeliveryState.DELIVERED: 2,
    DeliveryState.OPENED: 3,
    DeliveryState.CLICKED: 4,
    DeliveryState.DROPPED: 5,
    DeliveryState.BOUNCED: 5,
    DeliveryState.UNSUBSCRIBED: 6,
    DeliveryState.COMPLAINED: 7,
}


class SubscriberStatus(StrEnum):
    """Whether a subscriber gets the digest."""

    PENDING = "pending"  # double opt-in not yet confirmed
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


SUPPRESSED_STATUSES = frozenset(
    {SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED}
)


def check_constraint_sql(column: str, values: type[StrEnum]) -> str:
    """`column IN ('a', 'b', ...)`: states are strings with a check, not a database enum."""
    listed = ", ".join(f"'{v.value}'" for v in values)
    return f"{column} IN ({listed})"
