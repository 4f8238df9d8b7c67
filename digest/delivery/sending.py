"""The send loop: sender lanes claim batch after batch, hand each to the backend, record the answer.

Everything it uses is handed in (`Sender`: the engine, an open backend, the link builder and the
sizes), so the loop holds no state of its own between runs and tests pass a recording backend.
Rows move to `sent` only after the provider accepted them; see `digest/states.py` for
every move and its cause. Transient errors are retried inside the backend (the one retry layer);
one that outlasts the backend's attempts hands the batch back to `pending` and stops the lane.

With a lead time (`DIGEST_SEND_LEAD_SECONDS`) and a backend that can hold requests, a lane's
requests go under a provider batch due `lead` seconds after the first of them; the claim writes
the batch and its send time on the rows. A lane's batch takes up to `REQUESTS_PER_BATCH` requests
of one variant for at most `BATCH_OPEN_SECONDS` (`LaneBatches`). An ambiguous answer (timeout,
dropped connection, 5xx) is never retried blind: the batch is cancelled, the cancel confirmed, and
its rows (the lost request's, and those of its earlier requests) go again under a new batch
(`digest/delivery/cancelling.py`). So one lost answer costs one cancel, and the provider's few
cancels at once (10 for SendGrid) each stop a group of requests when the editor recalls a week.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Self

from sqlalchemy.engine import Engine

from digest.config import CANCEL_MARGIN_SECONDS, Settings
from digest.delivery import ledger
from digest.delivery.cancelling import Canceller, canceller_for
from digest.errors import RecalledError, RunInProgressError
from digest.links import Links, recipient_headers
from digest.render.placeholders import subscriber_substitutions
from digest.send.base import (
    AmbiguousSendError,
    BatchResult,
    CancelRefusedError,
    EmailBackend,
    OutgoingBatch,
    PermanentSendError,
    ProviderBatch,
    Recipient,
    SendAuthError,
    TransientSendError,
)
from digest.states import Cause
from digest.weeks import utcnow

log = logging.getLogger(__name__)

# Senders working one digest at once. Each claims batch after batch until nothing is pending, so
# four coarse tasks carry the whole send; one task per batch spent a fifth of it in orchestration.
SENDER_LANES = 4

# Requests sharing one provider batch. One batch-id call per request cost the 100k send 10-16%
# (docs/benchmarks.md); sharing makes that negligible, and a recall's ten cancels stop 25 times
# more. The price: a lost answer resends the requests its batch already holds (never twice).
REQUESTS_PER_BATCH = 25
# How long a lane's batch takes new requests at most. Its requests all carry the batch's send
# time, so later ones are held a little less than the lead time; and an ambiguous answer to the
# last one must leave time to cancel before the provider's deadline (see `batch_open_seconds`).
BATCH_OPEN_SECONDS = 60.0


@dataclass(frozen=True)
class Sender:
    """What a lane sends with: handed in by whoever opened the backend (and closes it)."""

    engine: Engine
    backend: EmailBackend
    links: Links
    from_email: str
    from_name: str
    batch_size: int
    lease_seconds: int
    # Requests held this long by the provider, cancellable meanwhile; None sends at once.
    canceller: Canceller | None = None
    lead_seconds: int = 0
    max_attempts: int = 5
    # How many requests share a provider batch, and for how long it takes new ones.
    requests_per_batch: int = 1
    batch_open_seconds: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, *, engine: Engine, backend: EmailBackend) -> Self:
        canceller = canceller_for(settings, engine=engine, backend=backend)
        return cls(
            engine=engine,
            backend=backend,
            links=Links.from_settings(settings),
            from_email=settings.from_email,
            from_name=settings.from_name,
            batch_size=settings.batch_size,
            lease_seconds=settings.lease_seconds,
            canceller=canceller,
            lead_seconds=settings.send_lead_seconds,
            max_attempts=settings.send_max_attempts,
            requests_per_batch=REQUESTS_PER_BATCH,
            batch_open_seconds=batch_open_seconds(
                settings.send_lead_seconds, canceller.deadline_seconds if canceller else 0
            ),
        )

    def new_provider_batch(self) -> ProviderBatch:
        """A fresh batch, due after the lead time (only with a canceller)."""
        assert self.canceller is not None
        batch_id = self.canceller.backend.new_batch_id()
        return ProviderBatch(batch_id, utcnow() + timedelta(seconds=self.lead_seconds))


def batch_open_seconds(lead_seconds: int, deadline_seconds: int) -> float:
    """How long a batch takes new requests: at most half the time its first request leaves to
    cancel it (lead, less the provider's deadline and our margin), and at most a minute; 0 means
    one request per batch."""
    room = lead_seconds - deadline_seconds - CANCEL_MARGIN_SECONDS
    return max(0.0, min(BATCH_OPEN_SECONDS, room / 2))


@dataclass
class OpenBatch:
    """The provider batch a lane's requests are joining, and when it stops taking them."""

    batch: ProviderBatch
    variant_id: int
    closes_at: datetime
    requests: int = 0


class LaneBatches:
    """The provider batches of one lane, one open at a time.

    A lane's requests of one variant join its open batch until the batch is full or its time is
    up; a lost answer closes it. One variant only: rows a cancel puts back are then in the
    variant the lane is still working through, so the lane itself sends them again. A batch no
    request joined yet (its claim found the variant done) serves the next variant.
    """

    def __init__(self, sender: Sender) -> None:
        self._sender = sender
        self._open: OpenBatch | None = None

    def batch_for(self, variant_id: int) -> ProviderBatch | None:
        """The batch the next request of `variant_id` goes under; None sends at once."""
        if self._sender.canceller is None:
            return None
        current = self._open
        if current is not None and current.requests == 0:
            current.variant_id = variant_id  # unused (the last claim found nothing): any variant
        if (
            current is None
            or current.variant_id != variant_id
            or current.requests >= self._sender.requests_per_batch
            or utcnow() >= current.closes_at
        ):
            current = self._open = self._opened(variant_id)
        return current.batch

    def joined(self) -> None:
        """A request was claimed under the open batch."""
        if self._open is not None:
            self._open.requests += 1

    def close(self) -> None:
        """The open batch takes no more requests (its answer was lost: it may be cancelled)."""
        self._open = None

    def _opened(self, variant_id: int) -> OpenBatch:
        batch = self._sender.new_provider_batch()
        closes_at = utcnow() + timedelta(seconds=self._sender.batch_open_seconds)
        return OpenBatch(batch=batch, variant_id=variant_id, closes_at=closes_at)


@dataclass(frozen=True)
class SendPlan:
    """What a run's sender lanes share, read once before they start."""

    digest_id: int
    week: str
    owner: str  # the run's lease owner; every claim of the run starts with it
    variants: tuple[int, ...]  # variants with rows pending
    lanes: tuple[int, ...]  # lane numbers: never more lanes than batches


def send_plan(
    engine: Engine, *, digest_id: int, week: str, owner: str, batch_size: int
) -> SendPlan:
    with engine.connect() as connection:
        pending = ledger.pending_by_variant(connection, digest_id=digest_id)
    batches = sum(-(-count // batch_size) for count in pending.values())
    return SendPlan(
        digest_id=digest_id,
        week=week,
        owner=owner,
        variants=tuple(sorted(pending)),
        lanes=tuple(range(min(SENDER_LANES, batches))),
    )


class StopKind(StrEnum):
    """Why a run's lanes stopped before the work was done."""

    KEY_REFUSED = "key-refused"  # the provider refused our credentials: no lane may go on
    LEASE_LOST = "lease-lost"  # another run took the digest over
    REQUEST_REFUSED = "request-refused"  # a refusal no recipient explains: sender or content
    PROVIDER_UNAVAILABLE = "provider-unavailable"  # transient errors outlasted every attempt
    RECALLED = "recalled"  # the editor recalled the digest (`digest recall`)
    STOPPED = "stopped"  # the run's process is going away (parent died, interrupt): no new batch


class RunStop:
    """Shared by a run's lanes: once one lane meets a stop for everyone, the others stop too.

    A plain object (not a dataclass), so Prefect hands the same instance to every lane task.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self.kind: StopKind | None = None
        self.reason = ""

    def set(self, kind: StopKind, reason: str) -> None:
        if not self._event.is_set():
            self.kind, self.reason = kind, reason
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


@dataclass
class BatchReport:
    """What one batch did; counts only, never an address."""

    variant_id: int
    claimed: int = 0
    sent: int = 0
    failed: int = 0
    released: int = 0
    uncertain: int = 0
    cancelled: int = 0  # provider batches cancelled after an ambiguous answer
    requeued: int = 0  # rows of earlier requests of a cancelled batch: `sent` no more
    message_id: str | None = None
    error: str | None = None


@dataclass
class LaneReport:
    """What one sender lane did: its batches in order, and why it stopped early, if it did."""

    lane: int
    batches: list[BatchReport] = field(default_factory=list)
    stop: str | None = None
    stop_kind: StopKind | None = None

    @property
    def sent(self) -> int:
        """Rows this lane left `sent` (a cancel takes back what its batch had accepted)."""
        return sum(batch.sent - batch.requeued for batch in self.batches)


def recipient_for(links: Links, claimed: ledger.ClaimedRecipient) -> Recipient:
    """One claimed row as the backend's recipient: their own links, greeting and headers."""
    unsubscribe = links.unsubscribe(claimed.subscriber_id)
    return Recipient(
        delivery_id=claimed.delivery_id,
        email=claimed.email,
        name=claimed.name,
        substitutions=subscriber_substitutions(
            unsubscribe_url=unsubscribe,
            preferences_url=links.preferences(claimed.subscriber_id),
            name=claimed.name,
        ),
        headers=recipient_headers(unsubscribe),
    )


def _claim(
    sender: Sender, plan: SendPlan, variant_id: int, provider_batch: ProviderBatch | None
) -> ledger.ClaimedBatch:
    with sender.engine.begin() as connection:
        ledger.renew_lease(
            connection,
            digest_id=plan.digest_id,
            owner=plan.owner,
            ttl_seconds=sender.lease_seconds,
        )
        return ledger.claim_batch(
            connection,
            digest_id=plan.digest_id,
            variant_id=variant_id,
            owner=plan.owner,
            limit=sender.batch_size,
            provider_batch_id=provider_batch.id if provider_batch else None,
            send_at=provider_batch.send_at if provider_batch else None,
        )


def send_batch(
    sender: Sender,
    plan: SendPlan,
    variant: dict[str, Any],
    stop: RunStop,
    batches: LaneBatches,
) -> BatchReport:
    """Claim one batch of `variant`, hand it to the backend, and record the provider's answer.

    A refusal marks the recipients the provider blamed `failed` and hands the others back; a
    refusal of the request as such, a transient error that outlasted the backend's attempts,
    or a refused key hands every row back to `pending` and sets `stop`. If the process
    dies between claim and record, the rows stay `sending` with their provider batch: the next
    run cancels it while it can and sends its rows again (those of its earlier requests too),
    or finds them `uncertain`. Raises RunInProgressError when another run took the lease,
    RecalledError after a recall.
    """
    report = BatchReport(variant_id=int(variant["id"]))
    try:
        provider_batch = batches.batch_for(report.variant_id)
    except (TransientSendError, SendAuthError) as stopped:
        kind = StopKind.KEY_REFUSED if isinstance(stopped, SendAuthError) else None
        report.error = getattr(stopped, "reason", None) or str(stopped)
        stop.set(kind or StopKind.PROVIDER_UNAVAILABLE, report.error)
        return report
    claimed = _claim(sender, plan, report.variant_id, provider_batch)
    if not claimed.recipients:
        return report
    batches.joined()
    report.claimed = len(claimed)
    batch = OutgoingBatch(
        digest_id=plan.digest_id,
        week=plan.week,
        subject=variant["subject"],
        html=variant["html"],
        text=variant["text"],
        recipients=[recipient_for(sender.links, c) for c in claimed.recipients],
        from_email=sender.from_email,
        from_name=sender.from_name,
        provider_batch=provider_batch,
    )
    try:
        result = _send(sender, batches, claimed, batch, report, stop)
    except PermanentSendError as refused:
        return _refused(sender, claimed, report, refused, stop)
    except (TransientSendError, SendAuthError) as stopped:
        kind = StopKind.KEY_REFUSED if isinstance(stopped, SendAuthError) else None
        return _hand_back(sender, claimed, report, stopped, stop, kind)
    if result is None:  # an ambiguous answer settled the rows, or left them for the next run
        return report
    with sender.engine.begin() as connection:
        report.sent = ledger.mark_sent(connection, batch=claimed, message_id=result.message_id)
    report.message_id = result.message_id
    return report


def _send(
    sender: Sender,
    batches: LaneBatches,
    claimed: ledger.ClaimedBatch,
    batch: OutgoingBatch,
    report: BatchReport,
    stop: RunStop,
) -> BatchResult | None:
    """Send the batch; after an ambiguous answer, cancel its provider batch and send it again
    under a new one, up to the configured attempts. None: the rows were settled here."""
    for _attempt in range(sender.max_attempts):
        try:
            return sender.backend.send_batch(batch)
        except AmbiguousSendError as lost:
            assert sender.canceller is not None and batch.provider_batch is not None
            batches.close()
            if not _cancel_lost(sender, sender.canceller, claimed, batch, lost, report, stop):
                return None
        report.cancelled += 1
        if sender.canceller.slots_in_use() >= sender.canceller.slots - SENDER_LANES:
            # Every lane must keep a cancel slot for its own request in flight.
            _out_of_cancels(sender, claimed, report, stop)
            return None
        new_batch = batches.batch_for(report.variant_id)
        assert new_batch is not None
        batches.joined()
        with sender.engine.begin() as connection:
            ledger.reschedule(
                connection,
                batch=claimed,
                provider_batch_id=new_batch.id,
                send_at=new_batch.send_at,
            )
        batch = replace(batch, provider_batch=new_batch)
    _stop_after_cancels(
        sender,
        claimed,
        report,
        stop,
        f"the provider's answer was lost {report.cancelled} time(s), last: {report.error}; "
        "each batch was cancelled before its send time, so nobody got it twice",
    )
    return None


def _out_of_cancels(
    sender: Sender, claimed: ledger.ClaimedBatch, report: BatchReport, stop: RunStop
) -> None:
    """Lost answers hold the provider's cancel slots: the run stops before it could not cancel."""
    assert sender.canceller is not None
    wait = -(-sender.lead_seconds // 60)
    reason = (
        f"answers kept being lost (last: {report.error}), and their cancelled batches hold "
        f"{sender.canceller.slots_in_use()} of the {sender.canceller.slots} batches the "
        "provider keeps cancelled at once; the run stopped while every lane could still cancel, "
        f"so nobody got the digest twice. Retry in {wait} minutes, once their send time has "
        "passed"
    )
    _stop_after_cancels(sender, claimed, report, stop, reason)


def _stop_after_cancels(
    sender: Sender, claimed: ledger.ClaimedBatch, report: BatchReport, stop: RunStop, reason: str
) -> None:
    """The claimed rows, whose batches were all cancelled, wait `pending`; every lane stops."""
    with sender.engine.begin() as connection:
        report.released = ledger.release_pending(
            connection, batch=claimed, reason=reason, cause=Cause.CANCELLED_RESEND
        )
    report.error = reason
    stop.set(StopKind.PROVIDER_UNAVAILABLE, reason)


def _cancel_lost(
    sender: Sender,
    canceller: Canceller,
    claimed: ledger.ClaimedBatch,
    batch: OutgoingBatch,
    lost: AmbiguousSendError,
    report: BatchReport,
    stop: RunStop,
) -> bool:
    """Cancel the provider batch of a request whose answer was lost; True once confirmed.

    Too late or refused: the rows are `uncertain` (events settle them). The provider out of
    reach: the rows stay `sending` with their batch, the run stops, and the next run cancels.
    """
    held = batch.provider_batch
    assert held is not None
    report.error = lost.reason
    try:
        if not canceller.in_time(held.send_at):
            raise CancelRefusedError(f"too close to the batch's send time to cancel it ({lost})")
        canceller.cancel(batch_id=held.id, digest_id=claimed.digest_id, send_at=held.send_at)
        with sender.engine.begin() as connection:
            # Its earlier requests were accepted into the batch just cancelled: they go again.
            report.requeued += ledger.requeue_accepted(
                connection, digest_id=claimed.digest_id, batch_id=held.id
            )
    except CancelRefusedError as refused:
        with sender.engine.begin() as connection:
            report.uncertain = ledger.mark_uncertain(
                connection, batch=claimed, reason=refused.reason
            )
        return False
    except (TransientSendError, SendAuthError) as unreachable:
        stop.set(
            StopKind.PROVIDER_UNAVAILABLE,
            f"{lost.reason}; and its batch could not be cancelled yet ({unreachable}): the next "
            "run cancels it while there is time, then sends those rows",
        )
        return False
    return True


def _refused(
    sender: Sender,
    claimed: ledger.ClaimedBatch,
    report: BatchReport,
    refused: PermanentSendError,
    stop: RunStop,
) -> BatchReport:
    """Fail the recipients the provider blamed and send the rest again; if it blamed none, the
    request itself is at fault (sender, content): every row waits and the run stops."""
    if not refused.refused:
        return _hand_back(sender, claimed, report, refused, stop, StopKind.REQUEST_REFUSED)
    with sender.engine.begin() as connection:
        report.failed = ledger.mark_refused(connection, batch=claimed, reasons=refused.refused)
        report.released = ledger.release_pending(
            connection,
            batch=claimed,
            reason="sent again: the provider refused another recipient of its request",
            cause=Cause.NEIGHBOUR_REFUSED,
        )
    report.error = refused.reason
    return report


def _hand_back(
    sender: Sender,
    claimed: ledger.ClaimedBatch,
    report: BatchReport,
    error: Exception,
    stop: RunStop,
    kind: StopKind | None,
) -> BatchReport:
    """Every row of the batch back to `pending`, and every lane of the run stops."""
    cause = Cause.REQUEST_REFUSED if kind is StopKind.REQUEST_REFUSED else Cause.TRANSIENT
    reason = getattr(error, "reason", None) or str(error)
    with sender.engine.begin() as connection:
        report.released = ledger.release_pending(
            connection, batch=claimed, reason=reason, cause=cause
        )
    report.error = reason
    stop.set(kind or StopKind.PROVIDER_UNAVAILABLE, reason)
    return report


def send_lane(
    sender: Sender,
    plan: SendPlan,
    *,
    lane: int,
    stop: RunStop,
    on_batch: Callable[[BatchReport], None] | None = None,
) -> LaneReport:
    """Send batch after batch of every planned variant until none of its rows is left pending.

    Several lanes run at once: claims never overlap, so lanes share the work however fast each
    one goes. Every batch moves its rows out of `pending` for good, or sets `stop`, so the loop
    always ends; a stopped lane's rows wait, `pending`, for the next run.
    """
    report = LaneReport(lane=lane)
    batches = LaneBatches(sender)
    # Lanes start on different variants, so they seldom wait on each other's claims.
    start = lane % len(plan.variants) if plan.variants else 0
    variants = plan.variants[start:] + plan.variants[:start]
    with sender.engine.connect() as connection:
        # Variant bodies never change once stored: each lane reads each one once.
        bodies = {vid: ledger.variant_row(connection, variant_id=vid) for vid in variants}
    for variant_id in variants:
        while not stop.is_set():
            try:
                batch = send_batch(sender, plan, bodies[variant_id], stop, batches)
            except RunInProgressError as lost:
                stop.set(StopKind.LEASE_LOST, str(lost))
                break
            except RecalledError as recalled:
                stop.set(StopKind.RECALLED, str(recalled))
                break
            if not batch.claimed:
                break
            report.batches.append(batch)
            if on_batch is not None:
                on_batch(batch)
    if stop.is_set():
        report.stop, report.stop_kind = stop.reason, stop.kind
    return report
