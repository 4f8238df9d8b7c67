"""Claiming and settling batches: rows move `pending` → `sending` → an outcome, one statement each.

A claim stamps its rows with a claim id of its own, "<run owner>#<request>"; settling matches on
that id alone, so a row another run has since taken over is never settled by this one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple

import orjson
from sqlalchemy import (
    ColumnElement,
    Integer,
    Text,
    Update,
    any_,
    bindparam,
    func,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection

from digest.delivery.ledger.batches import note_requests
from digest.delivery.ledger.leases import lease_held
from digest.models import DELIVERY_TABLE as DELIVERY
from digest.models import SUBSCRIBER_TABLE as SUBSCRIBER
from digest.states import Cause, DeliveryState, SubscriberStatus, sources_of, values
from digest.weeks import utcnow

_REASON_LIMIT = 2000


class ClaimedRecipient(NamedTuple):
    """One claimed row: who it goes to."""

    delivery_id: int
    subscriber_id: int
    email: str
    name: str | None


@dataclass(frozen=True)
class ClaimedBatch:
    """Rows one request moved to `sending`, under a claim id of its own."""

    digest_id: int
    variant_id: int
    claim: str  # written to each row's claim_owner: "<run owner>#<request>"
    recipients: list[ClaimedRecipient]

    def __len__(self) -> int:
        return len(self.recipients)

    @property
    def delivery_ids(self) -> list[int]:
        return [r.delivery_id for r in self.recipients]


# The condition of the claim's partial index, written as a literal: a bound parameter would
# keep the database from seeing that the index applies.
PENDING_ONLY = DELIVERY.c.state == literal_column(f"'{DeliveryState.PENDING.value}'")
if sources_of(DeliveryState.SENDING, Cause.CLAIM) != {DeliveryState.PENDING}:
    raise RuntimeError("the claim's index holds pending rows only: a claim must start there")


def _among(dialect: str) -> ColumnElement[bool]:
    """`delivery.id` is one of the ids bound as `ids`, as one value (a JSON array on SQLite, an
    array on PostgreSQL; `_ids_value` makes it). `id IN (...)` binds each id on its own:
    settling a request of 1,000 rows spent about 1 ms of CPU rendering the list."""
    if dialect == "postgresql":
        return DELIVERY.c.id == any_(bindparam("ids", type_=ARRAY(Integer)))
    listed = func.json_each(bindparam("ids", type_=Text)).table_valued("value")
    return DELIVERY.c.id.in_(select(listed.c.value))


def _ids_value(connection: Connection, ids: list[int]) -> list[int] | str:
    return ids if connection.dialect.name == "postgresql" else orjson.dumps(ids).decode()


def pending_by_variant(connection: Connection, *, digest_id: int) -> dict[int, int]:
    """How many rows wait to be sent, per variant id (read from the claim's index)."""
    rows = connection.execute(
        select(DELIVERY.c.variant_id, func.count())
        .where(DELIVERY.c.digest_id == digest_id, PENDING_ONLY)
        .group_by(DELIVERY.c.variant_id)
    )
    return {int(vid): int(n) for vid, n in rows if vid is not None}


def claim_batch(
    connection: Connection,
    *,
    digest_id: int,
    variant_id: int,
    owner: str,
    limit: int,
    provider_batch_id: str | None = None,
    send_at: datetime | None = None,
    while_leased: bool = False,
) -> ClaimedBatch:
    """Move up to `limit` pending rows of one variant to `sending` for `owner`, in one statement.

    The provider batch the request will go under, and its send time, are written by the same
    statement (and the batch counts one more request): a run that dies after sending leaves rows
    whose batch the next run can cancel. Only rows of currently active subscribers are claimed,
    so an unsubscribe takes effect before the next request. The lowest ids of the variant come
    from the claim's index (digest, variant, id; pending rows only). On PostgreSQL, SKIP LOCKED
    lets several senders claim disjoint batches. `while_leased` claims nothing unless `owner`
    holds the digest's lease and the week is not recalled, checked by the same statement (the
    sender's `ledger.check_lease` then says which).
    """
    claim = f"{owner}#{uuid.uuid4().hex[:12]}"
    now = utcnow()
    statement = _claim_statement(connection.dialect.name, while_leased=while_leased)
    result = connection.execute(
        statement,
        {
            "of_digest": digest_id,
            "of_variant": variant_id,
            "limit": limit,
            "owner": owner,
            "claim": claim,
            "now": now,
            "batch_id": provider_batch_id,
            "at": send_at,
        },
    )
    # The driver's rows as they are: integers and text need no conversion, and making 1,000
    # `Row`s took 1.3 ms of a claim's 9 ms, inside the send's one write turn.
    with result:
        claimed = result.cursor.fetchall()
    recipients = sorted(map(ClaimedRecipient._make, claimed))
    if recipients and provider_batch_id is not None:
        note_requests(connection, batch_id=provider_batch_id)
    return ClaimedBatch(
        digest_id=digest_id, variant_id=variant_id, claim=claim, recipients=recipients
    )


# Statements built once per dialect and reused with their values bound: a send runs a claim and
# a settlement for every request, and building them anew cost 1.6 ms of a claim's 9.7 ms of
# CPU, inside the send's one write turn (docs/benchmarks.md).
@lru_cache(maxsize=4)
def _claim_statement(dialect: str, *, while_leased: bool) -> Update:
    """The claim, its values bound by name (a column's own name is SQLAlchemy's, in an update):
    of_digest, of_variant, limit, owner, claim, now, batch_id, at."""
    claimable = values(sources_of(DeliveryState.SENDING, Cause.CLAIM))
    conditions: list[ColumnElement[bool]] = [
        DELIVERY.c.id.in_(_lowest_pending(dialect)),
        DELIVERY.c.state.in_(claimable),
    ]
    if while_leased:
        conditions.append(
            lease_held(digest_id=bindparam("of_digest"), owner=bindparam("owner", type_=Text))
        )
    now = bindparam("now", type_=DELIVERY.c.updated_at.type)
    return (
        update(DELIVERY)
        .where(*conditions)
        .values(
            state=DeliveryState.SENDING.value,
            claim_owner=bindparam("claim", type_=Text),
            claimed_at=now,
            attempts=DELIVERY.c.attempts + 1,
            provider_batch_id=bindparam("batch_id", type_=Text),
            send_at=bindparam("at", type_=DELIVERY.c.send_at.type),
            updated_at=now,
        )
        .returning(DELIVERY.c.id, DELIVERY.c.subscriber_id, DELIVERY.c.email, DELIVERY.c.name)
    )


def _lowest_pending(dialect: str) -> Any:
    """The ids a claim takes: the variant's lowest pending ids of active subscribers."""
    candidates = (
        select(DELIVERY.c.id)
        .join(SUBSCRIBER, SUBSCRIBER.c.id == DELIVERY.c.subscriber_id)
        .where(
            DELIVERY.c.digest_id == bindparam("of_digest"),
            DELIVERY.c.variant_id == bindparam("of_variant"),
            PENDING_ONLY,
            SUBSCRIBER.c.status == SubscriberStatus.ACTIVE.value,
        )
        .order_by(DELIVERY.c.id)
        .limit(bindparam("limit", type_=Integer))
    )
    if dialect != "postgresql":
        return candidates.scalar_subquery()
    # Materialized: as a semi-join PostgreSQL may rescan the locking subquery per row, skip the
    # rows this very statement just updated, and claim past the limit.
    locked = candidates.with_for_update(of=DELIVERY, skip_locked=True).cte("picked")
    return select(locked.prefix_with("MATERIALIZED").c.id).scalar_subquery()


def _settle(
    connection: Connection,
    batch: ClaimedBatch,
    to: DeliveryState,
    cause: Cause,
    *,
    only: list[int] | None = None,
    **fields: Any,
) -> int:
    """Move the batch's rows that are still its own, and still where `cause` starts, to `to`.

    Found by primary key (the ids it claimed); the claim id decides which are still its own."""
    statement = _settle_statement(connection.dialect.name, to, cause, tuple(sorted(fields)))
    ids = only if only is not None else batch.delivery_ids
    bound = {"ids": _ids_value(connection, ids), "claim": batch.claim, "now": utcnow()}
    bound.update({f"new_{name}": value for name, value in fields.items()})
    return int(connection.execute(statement, bound).rowcount)


@lru_cache(maxsize=32)
def _settle_statement(
    dialect: str, to: DeliveryState, cause: Cause, fields: tuple[str, ...]
) -> Update:
    """Settling, its values bound by name: ids, claim, now and new_<field> for each of `fields`."""
    return (
        update(DELIVERY)
        .where(
            _among(dialect),
            DELIVERY.c.state.in_(values(sources_of(to, cause))),
            DELIVERY.c.claim_owner == bindparam("claim", type_=Text),
        )
        .values(
            state=to.value,
            updated_at=bindparam("now", type_=DELIVERY.c.updated_at.type),
            **{name: bindparam(f"new_{name}", type_=DELIVERY.c[name].type) for name in fields},
        )
    )


def mark_sent(connection: Connection, *, batch: ClaimedBatch, message_id: str | None) -> int:
    return _settle(
        connection,
        batch,
        DeliveryState.SENT,
        Cause.ACCEPTED,
        sent_at=utcnow(),
        provider_message_id=message_id,
        last_error=None,
    )


def mark_refused(connection: Connection, *, batch: ClaimedBatch, reasons: dict[int, str]) -> int:
    """The recipients the provider blamed are `failed`, each with its own reason."""
    by_reason: dict[str, list[int]] = {}
    for delivery_id, reason in reasons.items():
        by_reason.setdefault(reason[:_REASON_LIMIT], []).append(delivery_id)
    return sum(
        _settle(
            connection,
            batch,
            DeliveryState.FAILED,
            Cause.REFUSED,
            only=sorted(ids),
            last_error=reason,
        )
        for reason, ids in by_reason.items()
    )


def release_pending(
    connection: Connection, *, batch: ClaimedBatch, reason: str, cause: Cause = Cause.TRANSIENT
) -> int:
    """Hand the batch's unsettled rows back to `pending`; the attempt count stays raised."""
    return _settle(
        connection,
        batch,
        DeliveryState.PENDING,
        cause,
        claim_owner=None,
        provider_batch_id=None,
        send_at=None,
        last_error=reason[:_REASON_LIMIT],
    )


def mark_uncertain(connection: Connection, *, batch: ClaimedBatch, reason: str) -> int:
    """The batch's rows may or may not reach their subscribers: its cancel was impossible."""
    return _settle(
        connection,
        batch,
        DeliveryState.UNCERTAIN,
        Cause.CANCEL_IMPOSSIBLE,
        last_error=reason[:_REASON_LIMIT],
    )


def suppress_unsendable(connection: Connection, *, digest_id: int) -> int:
    """Pending rows whose subscriber left after planning are settled as `suppressed`."""
    gone = select(SUBSCRIBER.c.id).where(SUBSCRIBER.c.status != SubscriberStatus.ACTIVE.value)
    movable = sources_of(DeliveryState.SUPPRESSED, Cause.LEFT_BEFORE_SEND)
    result = connection.execute(
        update(DELIVERY)
        .where(
            DELIVERY.c.digest_id == digest_id,
            DELIVERY.c.state.in_(values(movable)),
            DELIVERY.c.subscriber_id.in_(gone.scalar_subquery()),
        )
        .values(state=DeliveryState.SUPPRESSED.value, updated_at=utcnow())
    )
    return int(result.rowcount)


def _requeue(connection: Connection, *, digest_id: int, cause: Cause) -> int:
    movable = sources_of(DeliveryState.PENDING, cause)
    result = connection.execute(
        update(DELIVERY)
        .where(DELIVERY.c.digest_id == digest_id, DELIVERY.c.state.in_(values(movable)))
        .values(state=DeliveryState.PENDING.value, claim_owner=None, updated_at=utcnow())
    )
    return int(result.rowcount)


def requeue_uncertain(connection: Connection, *, digest_id: int) -> int:
    """`--resend-uncertain`: put uncertain rows back to `pending`, on purpose."""
    return _requeue(connection, digest_id=digest_id, cause=Cause.RESEND_ON_PURPOSE)


def requeue_failed(connection: Connection, *, digest_id: int) -> int:
    """`--retry-failed`: put rows the provider refused back to `pending`, once fixed."""
    return _requeue(connection, digest_id=digest_id, cause=Cause.RETRY_FAILED)
