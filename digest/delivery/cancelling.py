"""Held provider batches: opening them within the cancel budget, cancelling them after an
ambiguous answer, after a dead run, on recall.

A request sent with a lead time (`DIGEST_SEND_LEAD_SECONDS`) is held by the provider until its
`send_at` and can be cancelled until the provider's deadline before it. A batch is opened only
while one of the provider's few cancel slots is free for it (`digest/delivery/ledger/batches.py`
keeps the count), a cancel is asked only while there is time (a margin covers the request
itself), and counts only once the provider confirmed it; then the rows are sent again under a
new batch. Too late, or refused: the rows are `uncertain`, and provider events settle them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.engine import Engine

from digest.config import CANCEL_MARGIN_SECONDS, Settings
from digest.delivery import ledger
from digest.send.base import (
    CancelRefusedError,
    EmailBackend,
    ProviderBatch,
    SchedulingBackend,
    SendAuthError,
    TransientSendError,
)
from digest.states import Cause, DeliveryState
from digest.weeks import utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NoFreeSlot:
    """Every cancel slot is held by a batch that may still need it; one frees at `frees_at`."""

    slots: int
    frees_at: datetime | None


@dataclass(frozen=True)
class Canceller:
    """Opens and cancels provider batches through an open scheduling backend, and keeps their
    record and the cancel budget in the ledger."""

    engine: Engine
    backend: SchedulingBackend

    @property
    def deadline_seconds(self) -> int:
        """How long before a batch's send time the provider stops honouring a cancel."""
        return self.backend.cancel_deadline_seconds

    @property
    def slots(self) -> int:
        """How many batches the provider keeps cancelled at once."""
        return self.backend.cancel_slots

    @property
    def too_late(self) -> timedelta:
        """How long before its send time a batch can no longer be cancelled by us: the provider's
        deadline, and the margin a cancel takes to be asked and confirmed."""
        return timedelta(seconds=self.deadline_seconds + CANCEL_MARGIN_SECONDS)

    def cutoff(self) -> datetime:
        """Batches due after this can still be cancelled."""
        return utcnow() + self.too_late

    def in_time(self, send_at: datetime) -> bool:
        return send_at > self.cutoff()

    def open_batch(self, *, digest_id: int, lead_seconds: int) -> ProviderBatch | NoFreeSlot:
        """A new batch due `lead_seconds` from now, if a cancel slot is free for it."""
        self.free_slots()
        with self.engine.connect() as connection:
            held = ledger.slots_held(connection, now=utcnow(), too_late=self.too_late)
        if held.held >= self.slots:
            return NoFreeSlot(slots=self.slots, frees_at=held.next_free)
        batch_id = self.backend.new_batch_id()
        send_at = utcnow() + timedelta(seconds=lead_seconds)
        with self.engine.begin() as connection:
            refused = ledger.reserve_batch(
                connection,
                batch_id=batch_id,
                digest_id=digest_id,
                send_at=send_at,
                slots=self.slots,
                too_late=self.too_late,
            )
        if refused is not None:
            return NoFreeSlot(slots=self.slots, frees_at=refused.next_free)
        join_by = send_at - self.too_late - timedelta(seconds=self.backend.request_timeout_seconds)
        return ProviderBatch(batch_id, send_at, join_by)

    def release(self, batch: ProviderBatch) -> None:
        """A batch no request went under gives its slot back."""
        with self.engine.begin() as connection:
            ledger.drop_unused(connection, batch_id=batch.id)

    def cancel(self, *, batch_id: str, digest_id: int | None, send_at: datetime) -> None:
        """Cancel and confirm; CancelRefusedError or TransientSendError when that fails."""
        self.free_slots()
        self.backend.cancel_batch(batch_id)
        with self.engine.begin() as connection:
            ledger.record_cancel(
                connection, batch_id=batch_id, digest_id=digest_id, send_at=send_at
            )

    def free_slots(self) -> None:
        """Forget the cancels whose send time has passed: their messages are gone for good."""
        with self.engine.connect() as connection:
            done = ledger.forgettable_cancels(connection, now=utcnow())
        for batch_id in done:
            self.backend.forget_cancel(batch_id)
            with self.engine.begin() as connection:
                ledger.mark_forgotten(connection, batch_id=batch_id)

    def slots_in_use(self) -> int:
        with self.engine.connect() as connection:
            return ledger.slots_held(connection, now=utcnow(), too_late=self.too_late).held


def canceller_for(settings: Settings, *, engine: Engine, backend: EmailBackend) -> Canceller | None:
    """A canceller when requests are held (a lead time) by a backend that can cancel them."""
    if settings.send_lead_seconds <= 0 or not isinstance(backend, SchedulingBackend):
        return None
    return Canceller(engine=engine, backend=backend)


@dataclass
class Recovery:
    """What became of the rows a dead run left in held batches."""

    resent: int = 0  # cancelled in time: back to `pending`
    uncertain: int = 0  # too late, or the cancel was refused
    unreachable: int = 0  # the provider could not be asked: left `sending` for the next run
    problems: list[str] = field(default_factory=list)


def recover_orphans(canceller: Canceller, *, digest_id: int, owner: str) -> Recovery:
    """Cancel the batches of rows a dead run left `sending`, while that is still possible.

    Run after taking the lease with `cancellable_after=canceller.cutoff()`, so the rows left
    here were cancellable then; each batch is checked again, since time has passed. Each such
    batch held a cancel slot from the moment it was opened, so the cancels always fit.
    """
    recovery = Recovery()
    with canceller.engine.connect() as connection:
        batches = ledger.orphan_batches(connection, digest_id=digest_id, owner=owner)
    for held in batches:
        to, cause, reason = _cancel_held(canceller, digest_id, held, recovery)
        if to is None:
            continue
        with canceller.engine.begin() as connection:
            moved = ledger.settle_held(
                connection,
                digest_id=digest_id,
                batch_id=held.batch_id,
                to=to,
                cause=cause,
                reason=reason,
            )
        if to is DeliveryState.PENDING:
            recovery.resent += moved
        else:
            recovery.uncertain += moved
    return recovery


def _cancel_held(
    canceller: Canceller, digest_id: int, held: ledger.HeldBatch, recovery: Recovery
) -> tuple[DeliveryState | None, Cause, str | None]:
    """Where one orphan batch's rows go: cancelled in time, uncertain, or (None) left alone."""
    if not canceller.in_time(held.send_at):
        return (
            DeliveryState.UNCERTAIN,
            Cause.RUN_DIED,
            "its sending run ended before the provider's answer was recorded, too close to "
            "the batch's send time to cancel it",
        )
    try:
        canceller.cancel(batch_id=held.batch_id, digest_id=digest_id, send_at=held.send_at)
    except CancelRefusedError as refused:
        return DeliveryState.UNCERTAIN, Cause.CANCEL_IMPOSSIBLE, refused.reason
    except (TransientSendError, SendAuthError) as unreachable:
        recovery.unreachable += held.rows
        recovery.problems.append(str(unreachable))
        return None, Cause.RUN_DIED_CANCELLED, None
    return (
        DeliveryState.PENDING,
        Cause.RUN_DIED_CANCELLED,
        "its run died with the batch in flight; the batch was cancelled and it is sent again",
    )
