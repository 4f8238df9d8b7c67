"""Provider batches in the ledger: rows held until a send time, the batches we cancelled, recalls.

A row claimed for a scheduled request carries its provider batch id and `send_at`. Until shortly
before `send_at` the batch can be cancelled, so rows whose outcome is unknown (an ambiguous
answer, a dead run) are cancelled and sent again instead of being guessed at. The batches
themselves, their cancels and the provider's few cancel slots are kept in `batches.py`.
"""

from __future__ import annotations

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from digest.delivery.ledger.batches import HeldBatch
from digest.models import DELIVERY_TABLE as DELIVERY
from digest.models import DIGEST_TABLE as DIGEST
from digest.models import PROVIDER_BATCH_TABLE as BATCH
from digest.models import RECALL_TABLE as RECALL
from digest.states import MAY_HAVE_REACHED, Cause, DeliveryState, sources_of, values
from digest.weeks import utcnow

_REASON_LIMIT = 2000

# A row back in the queue after its batch was cancelled: the next claim gives it a new batch,
# and nothing says it was ever sent.
_BACK_IN_QUEUE: dict[str, object] = {
    "state": DeliveryState.PENDING.value,
    "claim_owner": None,
    "provider_batch_id": None,
    "send_at": None,
    "sent_at": None,
    "provider_message_id": None,
}


def orphan_batches(connection: Connection, *, digest_id: int, owner: str) -> list[HeldBatch]:
    """Batches holding rows still `sending` under a claim that is not `owner`'s run."""
    return _held(
        connection,
        digest_id,
        DeliveryState.SENDING,
        ~DELIVERY.c.claim_owner.startswith(owner + "#", autoescape=True),
    )


def sent_batches(connection: Connection, *, digest_id: int) -> list[HeldBatch]:
    """Batches holding rows the provider accepted (`sent`, no event since): what recall stops."""
    return _held(connection, digest_id, DeliveryState.SENT, None)


def _held(
    connection: Connection,
    digest_id: int,
    state: DeliveryState,
    extra: ColumnElement[bool] | None,
) -> list[HeldBatch]:
    query = (
        select(DELIVERY.c.provider_batch_id, func.min(DELIVERY.c.send_at), func.count())
        .where(
            DELIVERY.c.digest_id == digest_id,
            DELIVERY.c.state == state.value,
            DELIVERY.c.provider_batch_id.is_not(None),
            DELIVERY.c.send_at.is_not(None),
        )
        .group_by(DELIVERY.c.provider_batch_id)
        .order_by(func.min(DELIVERY.c.send_at))
    )
    if extra is not None:
        query = query.where(extra)
    return [HeldBatch(str(b), when, int(n)) for b, when, n in connection.execute(query)]


def settle_held(
    connection: Connection,
    *,
    digest_id: int,
    batch_id: str,
    to: DeliveryState,
    cause: Cause,
    reason: str | None,
) -> int:
    """Move every row of one provider batch that `cause` may move to `to`."""
    fields: dict[str, object] = {"state": to.value, "updated_at": utcnow()}
    if to is DeliveryState.PENDING:
        fields |= _BACK_IN_QUEUE
    if reason is not None:
        fields["last_error"] = reason[:_REASON_LIMIT]
    result = connection.execute(
        update(DELIVERY)
        .where(
            DELIVERY.c.digest_id == digest_id,
            DELIVERY.c.provider_batch_id == batch_id,
            DELIVERY.c.state.in_(values(sources_of(to, cause))),
        )
        .values(**fields)
    )
    return int(result.rowcount)


def requeue_batch(connection: Connection, *, digest_id: int, batch_id: str) -> int:
    """Every row of a batch just cancelled after a lost answer goes back to `pending`, whichever
    request and variant it was in: the provider discards the whole batch, so all are sent again."""
    return _requeue_rows(
        connection,
        DELIVERY.c.digest_id == digest_id,
        DELIVERY.c.provider_batch_id == batch_id,
        cause=Cause.CANCELLED_RESEND,
        reason="sent again: an answer under its provider batch was lost, so the batch was "
        "cancelled before its send time",
    )


def requeue_cancelled(connection: Connection, *, digest_id: int) -> int:
    """Rows still `sending` or `sent` under a batch whose cancel was confirmed go back to
    `pending`: their holder (a run or a recall) died between the cancel and the ledger."""
    cancelled = select(BATCH.c.batch_id).where(
        BATCH.c.digest_id == digest_id, BATCH.c.cancelled_at.is_not(None)
    )
    return _requeue_rows(
        connection,
        DELIVERY.c.digest_id == digest_id,
        DELIVERY.c.provider_batch_id.in_(cancelled.scalar_subquery()),
        cause=Cause.RUN_DIED_CANCELLED,
        reason="its provider batch was cancelled in time: it is sent again",
    )


def _requeue_rows(
    connection: Connection, *where: ColumnElement[bool], cause: Cause, reason: str
) -> int:
    movable = values(sources_of(DeliveryState.PENDING, cause))
    result = connection.execute(
        update(DELIVERY)
        .where(*where, DELIVERY.c.state.in_(movable))
        .values(**_BACK_IN_QUEUE, last_error=reason, updated_at=utcnow())
    )
    return int(result.rowcount)


def may_have_reached(connection: Connection, *, digest_id: int) -> int:
    """Rows whose subscriber may hold the digest (or will, when its batch's time comes)."""
    return int(
        connection.execute(
            select(func.count())
            .select_from(DELIVERY)
            .where(
                DELIVERY.c.digest_id == digest_id,
                DELIVERY.c.state.in_(values(MAY_HAVE_REACHED)),
            )
        ).scalar_one()
    )


def mark_recalled(connection: Connection, *, week: str, stopped: int, on_their_way: int) -> None:
    """The week is recalled: no run sends it until one is started after the recall."""
    connection.execute(delete(RECALL).where(RECALL.c.week == week))
    connection.execute(
        RECALL.insert().values(
            week=week, recalled_at=utcnow(), stopped=stopped, on_their_way=on_their_way
        )
    )


def recalled_week(connection: Connection, *, digest_id: int) -> str | None:
    """The digest's week when the editor recalled it, else None."""
    found = connection.execute(
        select(RECALL.c.week)
        .join(DIGEST, DIGEST.c.week == RECALL.c.week)
        .where(DIGEST.c.id == digest_id)
    ).first()
    return str(found.week) if found else None


def is_recalled(connection: Connection, *, week: str) -> bool:
    found = connection.execute(select(RECALL.c.week).where(RECALL.c.week == week)).first()
    return found is not None


def clear_recall(connection: Connection, *, week: str) -> bool:
    """`--after-recall`: the week may be sent again; True if it was recalled."""
    return bool(connection.execute(delete(RECALL).where(RECALL.c.week == week)).rowcount)
