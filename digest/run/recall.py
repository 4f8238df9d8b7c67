"""`digest recall`: the editor's emergency stop for a week's digest.

Every batch of the digest whose send time is still far enough away is cancelled, and its rows go
back to `pending`; the week is marked recalled, so no scheduled run or Retry sends it again until
a run is started `--after-recall`. When every row was stopped, nobody can hold the digest: its
frozen content is released, so edits and a catalog fix apply to the next send.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from digest.delivery import ledger
from digest.delivery.cancelling import Canceller, recover_orphans
from digest.errors import NotFoundError, RunInProgressError
from digest.send.base import CancelRefusedError, SendAuthError, TransientSendError
from digest.states import Cause, DeliveryState

# How long a recall waits for a run sending the week to stop: its next claim sees the recall,
# and the requests it has in flight end within their timeout.
RUN_STOP_WAIT_SECONDS = 60.0


@dataclass
class RecallResult:
    """What a recall did, in counts of deliveries."""

    week: str
    stopped: int = 0  # cancelled in time: back to `pending`
    on_their_way: int = 0  # the provider has them (or may): they will arrive
    released: bool = False  # nobody can hold the digest: its frozen content was dropped
    problems: tuple[str, ...] = ()
    # Why the provider could not be asked (unreachable, key refused): what is left is not on
    # its way for sure, and a recall again soon may still stop it.
    unreachable: str | None = None


def recall(
    engine: Engine,
    *,
    week: str,
    canceller: Canceller | None,
    lease_seconds: int,
    wait_seconds: float = RUN_STOP_WAIT_SECONDS,
) -> RecallResult:
    """Stop what can still be stopped of `week`'s digest, and keep runs from sending it.

    A run sending the week stops at its next request once the week is marked recalled; the
    recall waits up to `wait_seconds` for it to let go of the digest, then cancels what it sent.
    """
    with engine.begin() as connection:
        digest = ledger.find_digest(connection, week)
        if digest is None:
            raise NotFoundError(f"There is no digest of {week} to recall: nothing was sent.")
        # Marked first: a run holding the lease stops at its next batch.
        ledger.mark_recalled(connection, week=week, stopped=0, on_their_way=0)
    digest_id = int(digest["id"])
    owner = f"recall-{ledger.new_owner()}"
    _take_lease(
        engine,
        week=week,
        digest_id=digest_id,
        owner=owner,
        canceller=canceller,
        lease_seconds=lease_seconds,
        wait_seconds=wait_seconds,
    )
    result = RecallResult(week=week)
    heartbeat = ledger.LeaseHeartbeat(
        engine, digest_id=digest_id, owner=owner, ttl_seconds=lease_seconds
    )
    try:
        with heartbeat:
            if canceller is not None:
                _stop_held(canceller, digest_id, owner, result)
            with engine.begin() as connection:
                result.on_their_way = ledger.may_have_reached(connection, digest_id=digest_id)
    finally:
        ledger.release_lease(engine, digest_id=digest_id, owner=owner)
    with engine.begin() as connection:
        if result.on_their_way == 0:
            result.released = ledger.discard_unsent(connection, week=week)
        ledger.mark_recalled(
            connection, week=week, stopped=result.stopped, on_their_way=result.on_their_way
        )
    return result


def _stop_held(canceller: Canceller, digest_id: int, owner: str, result: RecallResult) -> None:
    """Cancel what a dead run left in flight, then every batch the digest's requests went under."""
    recovered = recover_orphans(canceller, digest_id=digest_id, owner=owner)
    result.stopped += recovered.resent
    if recovered.problems:
        result.unreachable = recovered.problems[0]
    else:
        result.stopped += _cancel_sent(canceller, digest_id, result)


def _take_lease(
    engine: Engine,
    *,
    week: str,
    digest_id: int,
    owner: str,
    canceller: Canceller | None,
    lease_seconds: int,
    wait_seconds: float,
) -> None:
    """The digest's lease for the recall, once a run sending it has stopped."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            ledger.acquire_lease(
                engine,
                digest_id=digest_id,
                owner=owner,
                ttl_seconds=lease_seconds,
                cancellable_after=canceller.cutoff() if canceller else None,
            )
            return
        except RunInProgressError as busy:
            if time.monotonic() >= deadline:
                raise RunInProgressError(
                    f"{busy.holder} The week is marked recalled, so that run stops at its next "
                    f"request, but it had not stopped after {wait_seconds:g} s; what it already "
                    f"sent is still scheduled: run `digest recall --week {week}` again once it "
                    "has ended, to cancel that."
                ) from None
            time.sleep(0.5)


def _cancel_sent(canceller: Canceller, digest_id: int, result: RecallResult) -> int:
    """Cancel every batch of the digest that requests went under and that can still be
    cancelled. Each holds a cancel slot from its opening, so all fit (whatever else took
    the provider's slots is reported)."""
    stopped = 0
    with canceller.engine.connect() as connection:
        batches = ledger.live_batches(connection, digest_id=digest_id, cutoff=canceller.cutoff())
    for held in batches:
        try:
            canceller.cancel(batch_id=held.batch_id, digest_id=digest_id, send_at=held.send_at)
        except CancelRefusedError as refused:
            result.problems += (refused.reason,)
            continue
        except (TransientSendError, SendAuthError) as unreachable:
            # No other batch fares better: stop asking while the window to cancel is open.
            result.unreachable = getattr(unreachable, "reason", None) or str(unreachable)
            break
        with canceller.engine.begin() as connection:
            stopped += ledger.settle_held(
                connection,
                digest_id=digest_id,
                batch_id=held.batch_id,
                to=DeliveryState.PENDING,
                cause=Cause.RECALLED,
                reason="recalled: its batch was cancelled before its send time",
            )
    return stopped
