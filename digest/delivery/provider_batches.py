"""The provider batches of one run's send: which batch the next request goes under, and what a
lost answer does to its batch.

All requests of a run, whatever their variant, go under the run's current batch until it has
taken `REQUESTS_PER_BATCH` requests or its join time is up (a request's answer, lost after the
whole request timeout, must still leave time to cancel before the provider's deadline). So a
1,000,000-recipient week needs about four batch ids, and a recall's cancels stop all of them.
A new batch is opened only while a cancel slot is free for it; while none is, the run waits
for one (and says so), for at most `lead + 60 s`, the longest a slot can take to free.

A lost answer closes its batch and cancels it once, for every request under it: the first
request to learn of the loss asks the provider, the others wait for that answer. After a
confirmed cancel every row of the batch goes back to `pending`; a request still waiting to
leave under a closed batch is put back too, never sent into it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from digest.delivery import ledger
from digest.delivery.cancelling import Canceller, NoFreeSlot
from digest.delivery.run_stop import RunStop
from digest.send.base import CancelRefusedError, ProviderBatch, SendAuthError, TransientSendError
from digest.weeks import utcnow

# Requests sharing one provider batch: 250 requests of up to 1,000 recipients, so a week of a
# million needs four batch ids, and a lost answer resends at most a quarter of it.
REQUESTS_PER_BATCH = 250
# Beyond the longest a cancel slot can take to free (the lead time), a run stops waiting.
SLOT_WAIT_SLACK_SECONDS = 60


class SlotWaitTooLong(Exception):
    """Every cancel slot is held for longer than a run waits; `reason` says when to run again."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class LostVerdict:
    """What became of a batch after a lost answer under it."""

    cancelled: bool  # the provider confirmed the cancel: every row of the batch goes again
    requeued_now: int  # rows this call put back (0 when another request's loss did it)
    lost_in_a_row: int  # lost answers since the last accepted request
    refused: str | None = None  # the cancel was refused, or it was too late to ask
    unreachable: str | None = None  # the provider could not be asked


@dataclass
class _Cancel:
    """One batch's cancel, asked once; other requests under the batch wait for its outcome."""

    done: threading.Event = field(default_factory=threading.Event)
    cancelled: bool = False
    refused: str | None = None
    unreachable: str | None = None


@dataclass
class _Open:
    batch: ProviderBatch
    requests: int = 0


class RunBatches:
    """The provider batches of one run (none without a canceller: requests go at once)."""

    def __init__(
        self,
        canceller: Canceller | None,
        digest_id: int,
        lead_seconds: int,
        *,
        on_wait: Callable[[str], None] | None = None,
        requests_per_batch: int = REQUESTS_PER_BATCH,
        slot_wait_seconds: float | None = None,
    ) -> None:
        self._canceller = canceller
        self._digest_id = digest_id
        self._lead_seconds = lead_seconds
        self._on_wait = on_wait
        self._requests_per_batch = requests_per_batch
        self._slot_wait = (
            lead_seconds + SLOT_WAIT_SLACK_SECONDS
            if slot_wait_seconds is None
            else slot_wait_seconds
        )
        self._lock = threading.Lock()
        self._open: _Open | None = None
        self._closed: set[str] = set()
        self._cancels: dict[str, _Cancel] = {}
        self._lost_in_a_row = 0

    def current(self, stop: RunStop) -> ProviderBatch | None:
        """The batch the next request goes under, opened when needed; None sends at once (or
        the run was stopped while waiting for a cancel slot)."""
        if self._canceller is None:
            return None
        with self._lock:
            current = self._open
            if current is not None and self._has_room(current):
                current.requests += 1
                return current.batch
            self._open = None
        if current is not None:
            self._release_if_unused(current.batch)
        opened = self._open_new(self._canceller, stop)
        if opened is None:
            return None
        with self._lock:
            self._open = _Open(opened, requests=1)
        return opened

    def may_send(self, batch: ProviderBatch) -> bool:
        """Whether a request claimed under `batch` may still leave: not closed by a lost answer,
        and early enough that its own lost answer could still be cancelled."""
        with self._lock:
            closed = batch.id in self._closed
        return not closed and utcnow() < batch.join_by

    def answered(self) -> None:
        """A request was accepted: the count of lost answers in a row starts again."""
        with self._lock:
            self._lost_in_a_row = 0

    def lost(self, batch: ProviderBatch, reason: str) -> LostVerdict:
        """Close and cancel `batch` after a lost answer, once whatever the number of losses."""
        assert self._canceller is not None
        with self._lock:
            self._lost_in_a_row += 1
            in_a_row = self._lost_in_a_row
            self._closed.add(batch.id)
            if self._open is not None and self._open.batch.id == batch.id:
                self._open = None
            cancel = self._cancels.get(batch.id)
            first = cancel is None
            if cancel is None:
                cancel = self._cancels[batch.id] = _Cancel()
        requeued = self._cancel(self._canceller, batch, reason, cancel) if first else 0
        cancel.done.wait()
        return LostVerdict(
            cancelled=cancel.cancelled,
            requeued_now=requeued,
            lost_in_a_row=in_a_row,
            refused=cancel.refused,
            unreachable=cancel.unreachable,
        )

    def close(self) -> None:
        """The run's send is over: an open batch no request went under gives its slot back."""
        with self._lock:
            current, self._open = self._open, None
        if current is not None:
            self._release_if_unused(current.batch)

    def _has_room(self, current: _Open) -> bool:
        return current.requests < self._requests_per_batch and utcnow() < current.batch.join_by

    def _release_if_unused(self, batch: ProviderBatch) -> None:
        if self._canceller is not None:
            self._canceller.release(batch)

    def _cancel(
        self, canceller: Canceller, batch: ProviderBatch, reason: str, cancel: _Cancel
    ) -> int:
        """Ask the provider to cancel; on confirmation put every row of the batch back."""
        requeued = 0
        try:
            if not canceller.in_time(batch.send_at):
                raise CancelRefusedError(
                    f"too close to the batch's send time to cancel it ({reason})"
                )
            canceller.cancel(batch_id=batch.id, digest_id=self._digest_id, send_at=batch.send_at)
            with canceller.engine.begin() as connection:
                requeued = ledger.requeue_batch(
                    connection, digest_id=self._digest_id, batch_id=batch.id
                )
            cancel.cancelled = True
        except CancelRefusedError as refused:
            cancel.refused = refused.reason
        except (TransientSendError, SendAuthError) as unreachable:
            cancel.unreachable = getattr(unreachable, "reason", None) or str(unreachable)
        finally:
            cancel.done.set()
        return requeued

    def _open_new(self, canceller: Canceller, stop: RunStop) -> ProviderBatch | None:
        """A new batch once a cancel slot is free, waiting for one while that is worth it."""
        waited = 0.0
        while True:
            opened = canceller.open_batch(
                digest_id=self._digest_id, lead_seconds=self._lead_seconds
            )
            if isinstance(opened, ProviderBatch):
                if opened.join_by <= utcnow():
                    canceller.release(opened)
                    raise SlotWaitTooLong(_no_room_sentence(self._lead_seconds))
                return opened
            wait = _seconds_until(opened)
            if waited + wait > self._slot_wait:
                raise SlotWaitTooLong(_full_sentence(opened, wait))
            if self._on_wait is not None:
                self._on_wait(_waiting_sentence(opened, wait))
            if stop.wait(wait):
                return None
            waited += wait


def _seconds_until(full: NoFreeSlot) -> float:
    if full.frees_at is None:
        return 5.0
    return max(1.0, (full.frees_at - utcnow()).total_seconds() + 1.0)


def _clock(when: datetime) -> str:
    return f"{when:%H:%M:%S} UTC"


def _waiting_sentence(full: NoFreeSlot, wait: float) -> str:
    return (
        f"All {full.slots} of the provider's cancel slots are held by batches that may still "
        f"need a cancel; waiting {wait:.0f} s for one to free (at "
        f"{_clock(utcnow() + timedelta(seconds=wait))}) before sending more. Nothing is "
        "sent without a slot to cancel it, so nobody can get the digest twice."
    )


def _no_room_sentence(lead_seconds: int) -> str:
    return (
        f"a batch due in {lead_seconds} s (DIGEST_SEND_LEAD_SECONDS) leaves no time to take a "
        "request and still cancel it if its answer is lost; nothing was sent. Set a longer lead "
        "time"
    )


def _full_sentence(full: NoFreeSlot, wait: float) -> str:
    when = _clock(utcnow() + timedelta(seconds=wait))
    return (
        f"all {full.slots} of the provider's cancel slots are held, and the next frees only "
        f"at {when} (in {wait / 60:.0f} minutes); the run stopped with every unsent delivery "
        f"pending, so nobody got the digest twice. Run again after {when}"
    )
