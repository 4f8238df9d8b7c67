"""The delivery state machine, in one place: the states, every allowed move and its cause.

`MOVES` is the table a reader consults to answer "where can a delivery go from here, and why";
the ledger, the event applier and the run's outcome use the named sets below instead of listing
states of their own, and `tests/test_states.py` checks the code against the table (every move a
scenario makes is in it; provider events never lower a row's rank). The table of moves in
docs/exactly-once.md is generated from `MOVES` by `moves_markdown()`; a test keeps the two equal.

This is the ground floor: the tables, the ledger, the audience and the providers' adapters all
import it, and it imports nothing of ours. A provider's own words (SendGrid's `bounce`,
`spamreport`, ...) are translated to these states in that provider's webhook adapter
(`digest/webhooks/<provider>.py`), so the ledger and the events applier speak only these.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class DeliveryState(StrEnum):
    """Where one (digest, subscriber) delivery stands."""

    PENDING = "pending"  # planned, not yet claimed (or handed back after a transient error)
    SENDING = "sending"  # claimed for a request, HTTP call under way
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


S = DeliveryState

# Rank of the states a provider event can prove: an event never moves a row to a lower rank, so
# a late `delivered` after `bounced` leaves `bounced`. `uncertain` ranks with `sent`, but any
# event proves an uncertain row accepted, so every event state is reachable from it.
EVENT_RANK: dict[DeliveryState, int] = {
    S.SENT: 0,
    S.UNCERTAIN: 0,
    S.DEFERRED: 1,
    S.DELIVERED: 2,
    S.OPENED: 3,
    S.CLICKED: 4,
    S.DROPPED: 5,
    S.BOUNCED: 5,
    S.UNSUBSCRIBED: 6,
    S.COMPLAINED: 7,
}

# --- named sets: the rest of the code asks these, never lists states itself ---------------------

# Where planning puts a row: the subscriber gets the week's variant, or nothing this week.
PLANNED = frozenset({S.PENDING, S.SKIPPED})
# Rows the sender still owns: events wait for them to settle, and the digest is not complete.
OWNED_BY_SENDER = frozenset({S.PENDING, S.SENDING})
# Rows a rerun still has work on; none left and planning done means the week is fully sent.
OPEN = OWNED_BY_SENDER | {S.UNCERTAIN}
# Rows that end a run Failed: not yet sent, refused by the provider, or maybe never sent.
FAILS_THE_RUN = OPEN | {S.FAILED}
# Rows that events stored while they were `sending` may still move: settled, no event applied.
EVENTS_MAY_WAIT = frozenset({S.SENT, S.UNCERTAIN})
# Rows whose `last_error` the run report explains.
NEEDS_ATTENTION = frozenset({S.PENDING, S.FAILED, S.UNCERTAIN})
# The provider accepted the message (202, or an event since).
ACCEPTED = frozenset(EVENT_RANK) - {S.UNCERTAIN}
# No subscriber can hold the message: a digest whose rows are all here may be recomposed.
NEVER_SENT = frozenset({S.PENDING, S.SKIPPED, S.SUPPRESSED, S.FAILED})
# The subscriber may hold the message: its head-to-heads count as shown in later weeks.
MAY_HAVE_REACHED = ACCEPTED | {S.SENDING, S.UNCERTAIN}


class Cause(StrEnum):
    """Why a delivery moves; each move of `MOVES` names one."""

    CLAIM = "the run claims the row for a request"
    LEFT_BEFORE_SEND = "the subscriber left (unsubscribed, bounced, complained) before a claim"
    ACCEPTED = "the provider accepted the request (HTTP 202)"
    REFUSED = "the provider refused it for good (HTTP 400), reason kept"
    TRANSIENT = "a transient error (429, 5xx, timeout): handed back, attempt counted"
    NEIGHBOUR_REFUSED = "the provider refused another recipient of its request: sent again"
    REQUEST_REFUSED = "the provider refused the whole request (sender, content): handed back"
    NOT_LEFT = (
        "its request had not left when the run stopped, or when its provider batch closed (an "
        "answer under it was lost, or its time to take requests was up): handed back"
    )
    RUN_DIED = (
        "its run died before the provider's answer was recorded, and its batch can no longer be "
        "cancelled (or was sent at once); found by the next run"
    )
    CANCELLED_RESEND = (
        "an ambiguous answer (timeout, dropped connection, 5xx) to its request, or to a later "
        "request of its provider batch: the batch was cancelled, the cancel confirmed, and it "
        "is sent again under a new batch"
    )
    CANCEL_IMPOSSIBLE = (
        "its outcome is unknown (an ambiguous answer, or its run died) and the provider refused "
        "to cancel its batch, or it was too late to ask"
    )
    RUN_DIED_CANCELLED = (
        "its run died with a request of its provider batch in flight; the next run cancelled "
        "the batch in time and sends it again"
    )
    RECALLED = "`digest recall`: its batch was cancelled before its send time"
    RESEND_ON_PURPOSE = "`digest run --resend-uncertain`: resent on purpose"
    RETRY_FAILED = "`digest run --retry-failed`: its cause was fixed, sent again"
    EVENT = "a provider event proves a later stage (never a lower rank)"


@dataclass(frozen=True)
class Move:
    """One allowed move of a delivery row."""

    source: DeliveryState
    target: DeliveryState
    cause: Cause


def _event_moves() -> list[Move]:
    """Every event move: to a state of higher rank, and from `uncertain` to any event state."""
    return [
        Move(source, target, Cause.EVENT)
        for target, rank in EVENT_RANK.items()
        if target is not S.UNCERTAIN
        for source, source_rank in EVENT_RANK.items()
        if source_rank < rank or source is S.UNCERTAIN
    ]


MOVES: tuple[Move, ...] = (
    Move(S.PENDING, S.SENDING, Cause.CLAIM),
    Move(S.PENDING, S.SUPPRESSED, Cause.LEFT_BEFORE_SEND),
    Move(S.SENDING, S.SENT, Cause.ACCEPTED),
    Move(S.SENDING, S.FAILED, Cause.REFUSED),
    Move(S.SENDING, S.PENDING, Cause.TRANSIENT),
    Move(S.SENDING, S.PENDING, Cause.NEIGHBOUR_REFUSED),
    Move(S.SENDING, S.PENDING, Cause.REQUEST_REFUSED),
    Move(S.SENDING, S.PENDING, Cause.NOT_LEFT),
    Move(S.SENDING, S.UNCERTAIN, Cause.RUN_DIED),
    Move(S.SENDING, S.PENDING, Cause.CANCELLED_RESEND),
    Move(S.SENDING, S.UNCERTAIN, Cause.CANCEL_IMPOSSIBLE),
    Move(S.SENDING, S.PENDING, Cause.RUN_DIED_CANCELLED),
    # A provider batch holds several requests: its cancel also stops the ones already accepted.
    Move(S.SENT, S.PENDING, Cause.CANCELLED_RESEND),
    Move(S.SENT, S.PENDING, Cause.RUN_DIED_CANCELLED),
    Move(S.SENT, S.PENDING, Cause.RECALLED),
    Move(S.UNCERTAIN, S.PENDING, Cause.RESEND_ON_PURPOSE),
    Move(S.FAILED, S.PENDING, Cause.RETRY_FAILED),
    *_event_moves(),
)


def targets_from(source: DeliveryState) -> dict[DeliveryState, set[Cause]]:
    """Where a row in `source` may go, and why."""
    found: dict[DeliveryState, set[Cause]] = {}
    for move in MOVES:
        if move.source is source:
            found.setdefault(move.target, set()).add(move.cause)
    return found


def sources_of(target: DeliveryState, cause: Cause) -> frozenset[DeliveryState]:
    """The states that `cause` may move to `target`: what an UPDATE's WHERE clause allows."""
    return frozenset(m.source for m in MOVES if m.target is target and m.cause is cause)


def is_allowed(source: DeliveryState, target: DeliveryState) -> bool:
    return any(m.source is source and m.target is target for m in MOVES)


def values(states: frozenset[DeliveryState]) -> list[str]:
    """The stored strings of a set of states, sorted: for `column.in_(...)`."""
    return sorted(state.value for state in states)


def moves_markdown() -> str:
    """docs/exactly-once.md's table of moves, made from `MOVES` (event moves folded, one line
    per source and cause)."""
    lines = ["| from | to | cause |", "|---|---|---|"]
    lines += [f"| (planning) | `{state}` | planned |" for state in sorted(PLANNED)]
    folded: dict[tuple[DeliveryState, Cause], list[DeliveryState]] = {}
    for move in MOVES:
        folded.setdefault((move.source, move.cause), []).append(move.target)
    for (source, cause), targets in folded.items():
        shown = ", ".join(f"`{t}`" for t in targets)
        lines.append(f"| `{source}` | {shown} | {cause.value} |")
    return "\n".join(lines) + "\n"


class SubscriberStatus(StrEnum):
    """Whether a subscriber gets the digest."""

    PENDING = "pending"  # double opt-in not yet confirmed
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


# How strong a status is as a suppression; a subscriber only ever moves up this scale by events.
SUPPRESSION_RANK: dict[SubscriberStatus, int] = {
    SubscriberStatus.PENDING: 0,
    SubscriberStatus.ACTIVE: 0,
    SubscriberStatus.UNSUBSCRIBED: 1,
    SubscriberStatus.BOUNCED: 2,
    SubscriberStatus.COMPLAINED: 3,
}

SUPPRESSED_STATUSES = frozenset(s for s, rank in SUPPRESSION_RANK.items() if rank > 0)


def weaker_statuses_than(status: SubscriberStatus) -> list[str]:
    """The statuses a suppression to `status` may replace: every weaker one."""
    rank = SUPPRESSION_RANK[status]
    return [s.value for s, r in SUPPRESSION_RANK.items() if r < rank]


def check_constraint_sql(column: str, states: type[StrEnum]) -> str:
    """`column IN ('a', 'b', ...)`: states are strings with a check, not a database enum."""
    listed = ", ".join(f"'{v.value}'" for v in states)
    return f"{column} IN ({listed})"
