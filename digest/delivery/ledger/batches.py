"""Provider batches and the cancel budget: which batches may still need a cancel, and room for more.

The provider keeps at most `slots` batches cancelled (or paused) at once (SendGrid: 10). A batch
holds one of those slots from the moment a request may go under it until its send time is too
close to cancel it (its messages are then on their way, and no cancel could stop them); a
cancelled batch holds its slot until the cancel is forgotten, which the provider allows once the
send time has passed. A run opens a batch only while a slot is free for it, so whatever answer
is lost and whenever the editor recalls the week, every batch that can still be stopped has a
slot to be stopped with. The budget spans every digest: the provider counts per account.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import and_, bindparam, delete, func, or_, select, text, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from digest.db import insert_ignore
from digest.models import PROVIDER_BATCH_TABLE as BATCH
from digest.weeks import utcnow


class HeldBatch(NamedTuple):
    """One provider batch of a digest's rows: its id, its send time, how many rows it holds."""

    batch_id: str
    send_at: datetime
    rows: int


class SlotsHeld(NamedTuple):
    """How many of the provider's cancel slots our batches hold, and when the next one frees."""

    held: int
    next_free: datetime | None


def _holding(cutoff: datetime) -> ColumnElement[bool]:
    """Batches that hold a slot: a standing cancel, or a batch that could still be cancelled."""
    return and_(
        BATCH.c.forgotten_at.is_(None),
        or_(BATCH.c.cancelled_at.is_not(None), BATCH.c.send_at > cutoff),
    )


def slots_held(connection: Connection, *, now: datetime, too_late: timedelta) -> SlotsHeld:
    """The slots held now. `too_late`: how long before its send time a batch can no longer be
    cancelled (the provider's deadline and our margin); a live batch frees its slot then, a
    cancelled one once its send time has passed."""
    rows = connection.execute(
        select(BATCH.c.send_at, BATCH.c.cancelled_at.is_not(None)).where(_holding(now + too_late))
    ).all()
    frees = [send_at if cancelled else send_at - too_late for send_at, cancelled in rows]
    return SlotsHeld(held=len(rows), next_free=min(frees, default=None))


def reserve_batch(
    connection: Connection,
    *,
    batch_id: str,
    digest_id: int,
    send_at: datetime,
    slots: int,
    too_late: timedelta,
) -> SlotsHeld | None:
    """Record a new batch if a slot is free for it (None), else leave it out and say how the
    slots stand. Serialised: the row is written first (SQLite's write lock), under an advisory
    lock on PostgreSQL, so two runs never both take the last slot."""
    now = utcnow()
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(4711)"))
    connection.execute(
        BATCH.insert().values(
            batch_id=batch_id, digest_id=digest_id, send_at=send_at, opened_at=now, requests=0
        )
    )
    held = slots_held(connection, now=now, too_late=too_late)
    if held.held <= slots:
        return None
    connection.execute(delete(BATCH).where(BATCH.c.batch_id == batch_id))
    return slots_held(connection, now=now, too_late=too_late)


# Built once: every claim of a send runs it, inside the send's one write turn.
_NOTE_REQUESTS = (
    update(BATCH)
    .where(BATCH.c.batch_id == bindparam("of_batch"))
    .values(requests=BATCH.c.requests + bindparam("more"))
)


def note_requests(connection: Connection, *, batch_id: str, count: int = 1) -> None:
    """`count` more requests were claimed under the batch."""
    connection.execute(_NOTE_REQUESTS, {"of_batch": batch_id, "more": count})


def drop_unused(connection: Connection, *, batch_id: str) -> None:
    """A batch no request went under holds nothing at the provider: its slot is given back."""
    connection.execute(
        delete(BATCH).where(
            BATCH.c.batch_id == batch_id, BATCH.c.requests == 0, BATCH.c.cancelled_at.is_(None)
        )
    )


def record_cancel(
    connection: Connection, *, batch_id: str, digest_id: int | None, send_at: datetime
) -> None:
    """The provider confirmed the batch's cancel: it holds a slot until forgotten."""
    now = utcnow()
    connection.execute(
        insert_ignore(connection, BATCH).values(
            batch_id=batch_id, digest_id=digest_id, send_at=send_at, opened_at=now, requests=0
        )
    )
    connection.execute(
        update(BATCH)
        .where(BATCH.c.batch_id == batch_id, BATCH.c.cancelled_at.is_(None))
        .values(cancelled_at=now)
    )


def is_cancelled(connection: Connection, *, batch_id: str) -> bool:
    found = connection.execute(
        select(BATCH.c.cancelled_at).where(BATCH.c.batch_id == batch_id)
    ).first()
    return found is not None and found.cancelled_at is not None


def forgettable_cancels(connection: Connection, *, now: datetime) -> list[str]:
    """Cancels whose send time has passed: their messages are discarded, the slot may go."""
    return list(
        connection.execute(
            select(BATCH.c.batch_id).where(
                BATCH.c.forgotten_at.is_(None),
                BATCH.c.cancelled_at.is_not(None),
                BATCH.c.send_at < now,
            )
        ).scalars()
    )


def mark_forgotten(connection: Connection, *, batch_id: str) -> None:
    connection.execute(
        update(BATCH).where(BATCH.c.batch_id == batch_id).values(forgotten_at=utcnow())
    )


def cancels_standing(connection: Connection) -> int:
    """Cancels the provider still holds for us."""
    return int(
        connection.execute(
            select(func.count())
            .select_from(BATCH)
            .where(BATCH.c.cancelled_at.is_not(None), BATCH.c.forgotten_at.is_(None))
        ).scalar_one()
    )


def live_batches(connection: Connection, *, digest_id: int, cutoff: datetime) -> list[HeldBatch]:
    """The digest's batches that requests went under, not cancelled and still cancellable:
    what a recall stops, earliest send time first."""
    rows = connection.execute(
        select(BATCH.c.batch_id, BATCH.c.send_at, BATCH.c.requests)
        .where(
            BATCH.c.digest_id == digest_id,
            BATCH.c.requests > 0,
            BATCH.c.cancelled_at.is_(None),
            BATCH.c.send_at > cutoff,
        )
        .order_by(BATCH.c.send_at)
    )
    return [HeldBatch(str(b), when, int(n)) for b, when, n in rows]


def batch_ids_of(connection: Connection, *, digest_id: int) -> int:
    """How many provider batches requests of the digest went under (for the run's report)."""
    return int(
        connection.execute(
            select(func.count())
            .select_from(BATCH)
            .where(BATCH.c.digest_id == digest_id, BATCH.c.requests > 0)
        ).scalar_one()
    )
