"""The send phase: claim rows, build requests, keep several in flight, record every answer.

Everything it uses is handed in (`Sender`: the engine, an open backend, the link builder and the
sizes), so tests pass a recording backend and the loop keeps no state between runs. Rows move to
`sent` only after the provider accepted them; `digest/states.py` lists every move and its cause.

One thread claims (one statement a request, which also checks the run's lease); each claimed
request's recipients (their signed links, greeting and headers) are built beside it, by a child
process on the other core for a large send (`building.py`); up to `in_flight` requests wait on
the network at once in a small thread pool; one recorder thread marks what the provider
accepted (`recording.py`), and every write of the send takes its turn through the recorder's
gate. Claims take up to `batch_size` pending rows of one variant
through the claim's index, variant after variant, and go round again while a lost answer or a
refused neighbour put rows back, so a request is full whenever its variant has the rows.
Filling requests across variants instead (SendGrid `sections` named by each personalization's
substitutions) was measured and left: on a 100k list of 64 variants per-variant requests number
103 against 100, while a request of 1,000 subscribers in id order spans all 64 variants, so it
would carry 1.8 MB of section bodies beside its 0.6 MB of personalizations, against one 29 KB
body: four times the bytes to build, send and parse per recipient.

With a lead time and a backend that can hold requests, every request goes under the run's
current provider batch (`RunBatches`), which all variants share: a whole week needs a handful of
batch ids, each opened only while a cancel slot is free for it (the cancel budget,
`digest/delivery/ledger/batches.py`). An ambiguous answer (timeout, dropped connection, 5xx) is
never retried blind: its batch is cancelled once, the cancel confirmed, and every row of the
batch goes back to `pending` to be sent again under a new batch.
"""

from __future__ import annotations

import contextvars
import gc
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Self

from sqlalchemy.engine import Engine

from digest.config import Settings
from digest.delivery import ledger
from digest.delivery.building import BUILD_PROCESS_FROM_ROWS, Built, Encode, RecipientBuilder
from digest.delivery.cancelling import Canceller, canceller_for
from digest.delivery.provider_batches import REQUESTS_PER_BATCH, RunBatches, SlotWaitTooLong
from digest.delivery.recording import Accepted, Recorder
from digest.delivery.run_stop import RunStop, StopKind
from digest.errors import RecalledError, RunInProgressError
from digest.links import Links
from digest.send.base import (
    AmbiguousSendError,
    BatchClosedError,
    EmailBackend,
    EncodedRecipients,
    OutgoingBatch,
    PermanentSendError,
    ProviderBatch,
    SendAuthError,
    TransientSendError,
)
from digest.states import Cause

log = logging.getLogger(__name__)

# Requests waiting on the provider at once: with SendGrid 300 ms away, sixteen keep the claiming
# thread busy on the 2-core machine (docs/benchmarks.md); more would only hold more rows
# `sending` should the run die.
IN_FLIGHT = 16

__all__ = [
    "IN_FLIGHT",
    "RequestReport",
    "RunStop",
    "SendPlan",
    "SendReport",
    "Sender",
    "StopKind",
    "send",
    "send_plan",
]


@dataclass(frozen=True)
class Sender:
    """What a run sends with: handed in by whoever opened the backend (and closes it)."""

    engine: Engine
    backend: EmailBackend
    links: Links
    from_email: str
    from_name: str
    batch_size: int
    # Requests held this long by the provider, cancellable meanwhile; None sends at once.
    canceller: Canceller | None = None
    lead_seconds: int = 0
    # Lost answers in a row (no acceptance between) after which the run stops.
    max_attempts: int = 5
    in_flight: int = IN_FLIGHT
    # How long the send waits for a cancel slot before it stops; None: as long as one can take.
    slot_wait_seconds: float | None = None
    requests_per_batch: int = REQUESTS_PER_BATCH
    # Rows pending at which recipients are built in a second process; None: always here.
    build_process_from_rows: int | None = BUILD_PROCESS_FROM_ROWS

    @classmethod
    def from_settings(cls, settings: Settings, *, engine: Engine, backend: EmailBackend) -> Self:
        return cls(
            engine=engine,
            backend=backend,
            links=Links.from_settings(settings),
            from_email=settings.from_email,
            from_name=settings.from_name,
            batch_size=settings.batch_size,
            canceller=canceller_for(settings, engine=engine, backend=backend),
            lead_seconds=settings.send_lead_seconds,
            max_attempts=settings.send_max_attempts,
        )


@dataclass(frozen=True)
class SendPlan:
    """What a run's send shares, read once before it starts."""

    digest_id: int
    week: str
    owner: str  # the run's lease owner; every claim of the run starts with it


def send_plan(engine: Engine, *, digest_id: int, week: str, owner: str) -> SendPlan:
    return SendPlan(digest_id=digest_id, week=week, owner=owner)


@dataclass
class RequestReport:
    """What one request did; counts only, never an address."""

    variant_id: int
    claimed: int = 0
    sent: int = 0
    failed: int = 0
    released: int = 0  # handed back to `pending`
    uncertain: int = 0
    lost: bool = False  # its answer was lost (timeout, dropped connection, 5xx)
    cancelled: int = 0  # rows of its provider batch the confirmed cancel put back (any request)
    batch_id: str | None = None
    message_id: str | None = None
    error: str | None = None
    # Of the rows sent, those whose message carried both one-click unsubscribe headers.
    with_unsubscribe_headers: int = 0


@dataclass
class SendReport:
    """What a run's send did, request by request, and why it stopped early, if it did."""

    requests: list[RequestReport] = field(default_factory=list)
    batch_ids: set[str] = field(default_factory=set)
    stop: str | None = None
    stop_kind: StopKind | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, request: RequestReport) -> None:
        with self._lock:
            self.requests.append(request)
            if request.batch_id is not None:
                self.batch_ids.add(request.batch_id)

    @property
    def lost_answers(self) -> int:
        return sum(1 for r in self.requests if r.lost)

    @property
    def with_unsubscribe_headers(self) -> int:
        return sum(r.with_unsubscribe_headers for r in self.requests)

    def progress(self) -> tuple[int, int, int]:
        """(rows put back, rows sent, answers lost) so far."""
        with self._lock:
            return (
                sum(r.released + r.cancelled for r in self.requests),
                sum(r.sent for r in self.requests),
                sum(1 for r in self.requests if r.lost),
            )

    def worth_another_round(self, before: tuple[int, int, int]) -> bool:
        """Rows were put back since `before`, and the round got somewhere (something was sent,
        or an answer was lost, which the limit on lost answers in a row bounds): a round that
        only put rows back would only do so again."""
        put_back, sent, lost = self.progress()
        return put_back > before[0] and (sent > before[1] or lost > before[2])


def send(
    sender: Sender,
    plan: SendPlan,
    *,
    stop: RunStop,
    on_request: Callable[[RequestReport], None] | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> SendReport:
    """Send every pending row of the digest once, or stop with the rest still `pending`.

    Rounds go through every variant with pending rows; a round that put rows back (a cancel
    after a lost answer, a refused neighbour) is followed by another. Every request moves its
    rows out of `pending` for good or puts them back with a cause that bounds it (cancel slots,
    lost answers in a row), or sets `stop`, so the send always ends.
    """
    report = SendReport()
    with sender.engine.connect() as connection:
        pending = ledger.pending_by_variant(connection, digest_id=plan.digest_id)
    batches = RunBatches(
        sender.canceller,
        plan.digest_id,
        sender.lead_seconds,
        on_wait=on_wait,
        slot_wait_seconds=sender.slot_wait_seconds,
        requests_per_batch=sender.requests_per_batch,
    )
    # The send makes a million short-lived objects; objects older than it (the engine, the
    # bodies, Prefect's state) need not be walked by every collection meanwhile. Frozen, the
    # collector took a fifth less of the 100k send's CPU on the 2-core machine.
    gc.freeze()
    try:
        with (
            RecipientBuilder.for_send(
                sender.links,
                pending=sum(pending.values()),
                from_rows=sender.build_process_from_rows,
                encode=_encoder(sender, plan),
            ) as builder,
            Recorder(sender.engine) as recorder,
            _Dispatcher(sender.in_flight) as dispatcher,
        ):
            run = _Send(
                sender, plan, stop, report, batches, dispatcher, builder, recorder, on_request
            )
            run.rounds(pending)
    finally:
        gc.unfreeze()
    if stop.is_set():
        report.stop, report.stop_kind = stop.reason, stop.kind
    return report


@dataclass(frozen=True)
class _Request:
    """A claimed request: everything but its recipients, and how to get them (built meanwhile,
    in the building process or by the request's own thread)."""

    claimed: ledger.ClaimedBatch
    envelope: OutgoingBatch  # recipients left empty
    recipients: Callable[[], Built]

    def batch(self) -> OutgoingBatch:
        built = self.recipients()
        if isinstance(built, EncodedRecipients):
            return replace(self.envelope, encoded=built)
        return replace(self.envelope, recipients=built)


@dataclass(frozen=True)
class _Send:
    """One send's parts. The claiming thread runs `rounds`, claiming requests as room frees in
    flight; each request's recipients are built beside it (`builder`), its own pool thread
    posts it (`deliver`), and the recorder marks what the provider accepted."""

    sender: Sender
    plan: SendPlan
    stop: RunStop
    report: SendReport
    batches: RunBatches
    dispatcher: _Dispatcher
    builder: RecipientBuilder
    recorder: Recorder
    on_request: Callable[[RequestReport], None] | None

    def rounds(self, pending: dict[int, int]) -> None:
        """Rounds until one puts nothing back; `pending` (rows per variant, read by the caller)
        starts the first, each later one reads its own."""
        try:
            while not self.stop.is_set():
                before = self.report.progress()
                self._round(pending)
                self._settle_all()
                if not self.report.worth_another_round(before):
                    break
                with self.sender.engine.connect() as connection:
                    pending = ledger.pending_by_variant(connection, digest_id=self.plan.digest_id)
        finally:
            try:
                self._settle_all()
            finally:
                self.batches.close()

    def _settle_all(self) -> None:
        """Every request in flight answered, and every answer recorded."""
        self.dispatcher.drain()
        self.recorder.flush()

    def _round(self, pending: dict[int, int]) -> None:
        """One pass over the variants with pending rows."""
        engine = self.sender.engine
        for variant_id in sorted(pending):
            with engine.connect() as connection:
                # Variant bodies never change once stored.
                variant = ledger.variant_row(connection, variant_id=variant_id)
            for request in self._requests_of(variant):
                self.dispatcher.submit(partial(self.deliver, request))
            if self.stop.is_set():
                break

    def _requests_of(self, variant: dict[str, Any]) -> Iterator[_Request]:
        """Claim the variant's requests, each once room is free for it in flight, until a
        claim comes back short: the variant had no more pending rows then (rows put back later
        go in the next round). Claiming again to find it empty cost one transaction a variant,
        64 of the 100k list's 167."""
        while not self.stop.is_set():
            self.dispatcher.wait_for_room()
            provider_batch = self._current_batch()
            if self.stop.is_set():
                return
            claimed = self._claim(int(variant["id"]), provider_batch)
            if claimed is None or not claimed.recipients:
                return
            envelope = _envelope(self.sender, self.plan, variant, provider_batch)
            yield _Request(claimed, envelope, self.builder.start(claimed.recipients))
            if len(claimed) < self.sender.batch_size:
                return

    def _current_batch(self) -> ProviderBatch | None:
        """The batch the next request goes under; a provider out of reach or cancel slots
        held for too long stop the run (nothing claimed yet: every row stays `pending`)."""
        try:
            return self.batches.current(self.stop)
        except SlotWaitTooLong as full:
            self.stop.set(StopKind.NO_CANCEL_SLOT, full.reason)
        except SendAuthError as refused:
            self.stop.set(StopKind.KEY_REFUSED, str(refused))
        except TransientSendError as unreachable:
            self.stop.set(StopKind.PROVIDER_UNAVAILABLE, unreachable.reason)
        return None

    def _claim(
        self, variant_id: int, provider_batch: ProviderBatch | None
    ) -> ledger.ClaimedBatch | None:
        plan = self.plan
        try:
            with self.recorder.writing() as connection:
                # The claim itself requires the lease (the run's heartbeat keeps it alive), so
                # a recall or a takeover stops the next claim; an empty one says which, if any.
                claimed = ledger.claim_batch(
                    connection,
                    digest_id=plan.digest_id,
                    variant_id=variant_id,
                    owner=plan.owner,
                    limit=self.sender.batch_size,
                    provider_batch_id=provider_batch.id if provider_batch else None,
                    send_at=provider_batch.send_at if provider_batch else None,
                    while_leased=True,
                )
                if not claimed.recipients:
                    ledger.check_lease(connection, digest_id=plan.digest_id, owner=plan.owner)
                return claimed
        except RunInProgressError as lost:
            self.stop.set(StopKind.LEASE_LOST, str(lost))
        except RecalledError as recalled:
            self.stop.set(StopKind.RECALLED, str(recalled))
        return None

    def deliver(self, request: _Request) -> None:
        """Hand one request to the backend, and its answer to whoever records it (a pool
        thread): the recorder for an acceptance, this thread for anything else."""
        claimed, batch = request.claimed, request.batch()
        outcome = RequestReport(variant_id=claimed.variant_id, claimed=len(claimed))
        provider_batch = batch.provider_batch
        if provider_batch is not None:
            outcome.batch_id = provider_batch.id
        writes = _Writes(self.sender, self.recorder, claimed, outcome)
        try:
            if self.stop.is_set():
                raise BatchClosedError(f"not sent: the run stopped ({self.stop.reason})")
            if provider_batch is not None and not self.batches.may_send(provider_batch):
                raise BatchClosedError("its provider batch closed before the request left")
            result = self.sender.backend.send_batch(batch)
        except BatchClosedError as closed:
            writes.put_back(closed.reason)
        except AmbiguousSendError as lost:
            writes.lost(self.batches, batch, lost, self.stop)
        except PermanentSendError as refused:
            writes.refused(refused, self.stop)
        except (TransientSendError, SendAuthError) as stopped:
            kind = StopKind.KEY_REFUSED if isinstance(stopped, SendAuthError) else None
            writes.hand_back(stopped, self.stop, kind)
        else:
            self.batches.answered()
            outcome.message_id = result.message_id
            without = batch.without_unsubscribe_headers
            then = partial(self._accepted, outcome, without)
            self.recorder.accepted(Accepted(claimed, result.message_id, then))
            return
        self._done(outcome)

    def _accepted(self, outcome: RequestReport, without_headers: int, sent: int) -> None:
        # At worst, every recipient without the one-click headers was among those sent.
        outcome.sent = sent
        outcome.with_unsubscribe_headers = max(0, sent - without_headers)
        self._done(outcome)

    def _done(self, outcome: RequestReport) -> None:
        self.report.add(outcome)
        if self.on_request is not None:
            self.on_request(outcome)


def _envelope(
    sender: Sender, plan: SendPlan, variant: dict[str, Any], provider_batch: ProviderBatch | None
) -> OutgoingBatch:
    return OutgoingBatch(
        digest_id=plan.digest_id,
        week=plan.week,
        subject=variant["subject"],
        html=variant["html"],
        text=variant["text"],
        recipients=[],
        from_email=sender.from_email,
        from_name=sender.from_name,
        provider_batch=provider_batch,
    )


def _encoder(sender: Sender, plan: SendPlan) -> Encode | None:
    """How the building process encodes recipients for the backend, if the backend says."""
    encoder = sender.backend.recipient_encoder
    return None if encoder is None else partial(EncodedRecipients.encode, encoder, plan.digest_id)


@dataclass(frozen=True)
class _Writes:
    """How a request that was not accepted settles its rows, through the send's write gate."""

    sender: Sender
    recorder: Recorder
    claimed: ledger.ClaimedBatch
    outcome: RequestReport

    def lost(
        self,
        batches: RunBatches,
        batch: OutgoingBatch,
        lost: AmbiguousSendError,
        stop: RunStop,
    ) -> None:
        """An answer that may hide an acceptance: the batch is cancelled (once, for every
        request under it) and all its rows go again; too late or refused, this request's rows
        are `uncertain`; the provider out of reach, they stay `sending` for the next run to
        cancel."""
        assert batch.provider_batch is not None
        outcome = self.outcome
        outcome.lost, outcome.error = True, lost.reason
        verdict = batches.lost(batch.provider_batch, lost.reason)
        if verdict.cancelled:
            outcome.cancelled = verdict.requeued_now
            if verdict.lost_in_a_row >= self.sender.max_attempts:
                stop.set(
                    StopKind.PROVIDER_UNAVAILABLE,
                    f"the provider's answer was lost {verdict.lost_in_a_row} times in a row "
                    f"(last: {lost.reason}); each batch was cancelled before its send time, so "
                    "nobody got it twice",
                )
        elif verdict.refused is not None:
            with self.recorder.writing() as connection:
                outcome.uncertain = ledger.mark_uncertain(
                    connection, batch=self.claimed, reason=verdict.refused
                )
        else:
            stop.set(
                StopKind.PROVIDER_UNAVAILABLE,
                f"{lost.reason}; and its batch could not be cancelled yet "
                f"({verdict.unreachable}): the next run cancels it while there is time, then "
                "sends those rows",
            )

    def refused(self, refused: PermanentSendError, stop: RunStop) -> None:
        """Fail the recipients the provider blamed and send the rest again; if it blamed none,
        the request itself is at fault (sender, content): every row waits and the run stops."""
        if not refused.refused:
            self.hand_back(refused, stop, StopKind.REQUEST_REFUSED)
            return
        with self.recorder.writing() as connection:
            self.outcome.failed = ledger.mark_refused(
                connection, batch=self.claimed, reasons=refused.refused
            )
            self.outcome.released = ledger.release_pending(
                connection,
                batch=self.claimed,
                reason="sent again: the provider refused another recipient of its request",
                cause=Cause.NEIGHBOUR_REFUSED,
            )
        self.outcome.error = refused.reason

    def put_back(self, reason: str) -> None:
        """The request never left: its rows wait `pending` for the next request, or run."""
        with self.recorder.writing() as connection:
            self.outcome.released = ledger.release_pending(
                connection, batch=self.claimed, reason=reason, cause=Cause.NOT_LEFT
            )

    def hand_back(self, error: Exception, stop: RunStop, kind: StopKind | None) -> None:
        """Every row of the request back to `pending`, and the whole send stops."""
        cause = Cause.REQUEST_REFUSED if kind is StopKind.REQUEST_REFUSED else Cause.TRANSIENT
        reason = getattr(error, "reason", None) or str(error)
        with self.recorder.writing() as connection:
            self.outcome.released = ledger.release_pending(
                connection, batch=self.claimed, reason=reason, cause=cause
            )
        self.outcome.error = reason
        stop.set(kind or StopKind.PROVIDER_UNAVAILABLE, reason)


class _Dispatcher:
    """A bounded pool of requests in flight: the claiming thread waits for room before it
    claims, so no claimed row waits long for its request to leave."""

    def __init__(self, in_flight: int) -> None:
        self._room = threading.BoundedSemaphore(in_flight)
        self._pool = ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix="send")
        self._futures: set[Future[None]] = set()
        self._lock = threading.Lock()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.drain()
        self._pool.shutdown(wait=True)

    def wait_for_room(self) -> None:
        self._room.acquire()
        self._room.release()

    def submit(self, work: Callable[[], None]) -> None:
        self._room.acquire()
        # In the submitter's context: callbacks that log (Prefect's run logger) must find the
        # caller's settings and run in the pool's threads too, or Prefect looks for an API of
        # its own (and, with none configured, starts a server) to deliver a log line.
        future = self._pool.submit(contextvars.copy_context().run, work)
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future[None]) -> None:
        with self._lock:
            self._futures.discard(future)
        self._room.release()
        failure = future.exception()
        if failure is not None:
            log.error("a request's worker failed: %r", failure)

    def drain(self) -> None:
        """Wait for every request in flight; a worker's own failure is raised here."""
        while True:
            with self._lock:
                waiting = list(self._futures)
            if not waiting:
                return
            for future in waiting:
                future.result()
