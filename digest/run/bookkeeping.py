"""Around the send: taking the digest's lease, settling what a dead run left, and the count at
the end."""

from __future__ import annotations

from sqlalchemy.engine import Engine

from digest.delivery import events, ledger
from digest.delivery.cancelling import Canceller, Recovery, recover_orphans
from digest.errors import RecalledError
from digest.run import preparation
from digest.run.outcome import RunSummary
from digest.states import OPEN, OWNED_BY_SENDER
from digest.weeks import IsoWeek


def begin_run(
    engine: Engine,
    *,
    digest_id: int,
    owner: str,
    lease_seconds: int,
    resend_uncertain: bool,
    retry_failed: bool = False,
    canceller: Canceller | None = None,
    after_recall: bool = False,
) -> dict[str, int]:
    """Take the digest's lease, find rows a dead run left behind, requeue on ask: uncertain rows
    (`resend_uncertain`) and rows the provider refused (`retry_failed`, after a fix).

    With a `canceller` (requests held until a send time), a dead run's rows whose batch can
    still be cancelled are cancelled and sent again; the rest become `uncertain`. Provider
    events stored while those rows were `sending` are applied first: a row they prove accepted
    is settled, and never requeued. Raises RunInProgressError while another run lives, and
    RecalledError for a recalled week unless `after_recall`.
    """
    _check_recall(engine, digest_id=digest_id, after_recall=after_recall)
    cutoff = canceller.cutoff() if canceller is not None else None
    uncertain = ledger.acquire_lease(
        engine,
        digest_id=digest_id,
        owner=owner,
        ttl_seconds=lease_seconds,
        cancellable_after=cutoff,
    )
    recovery = Recovery()
    if canceller is not None:
        recovery = recover_orphans(canceller, digest_id=digest_id, owner=owner)
    requeued = retried = 0
    with engine.begin() as connection:
        settled = events.apply_recorded(connection, digest_id=digest_id)
        if resend_uncertain:
            requeued = ledger.requeue_uncertain(connection, digest_id=digest_id)
        if retry_failed:
            retried = ledger.requeue_failed(connection, digest_id=digest_id)
    return {
        "found_uncertain": uncertain + recovery.uncertain,
        "cancelled_and_resent": recovery.resent,
        "left_sending": recovery.unreachable,
        "settled_by_events": settled,
        "requeued_uncertain": requeued,
        "requeued_failed": retried,
    }


def _check_recall(engine: Engine, *, digest_id: int, after_recall: bool) -> None:
    with engine.begin() as connection:
        week = ledger.recalled_week(connection, digest_id=digest_id)
        if week is None:
            return
        if not after_recall:
            raise _recalled(week)
        ledger.clear_recall(connection, week=week)


def refuse_if_recalled(engine: Engine, *, week: str, after_recall: bool) -> None:
    """Before composing: a recalled week whose content was released must stay open for edits,
    so a run that may not send it must not freeze it again either."""
    if after_recall:
        return
    with engine.connect() as connection:
        if ledger.is_recalled(connection, week=week):
            raise _recalled(week)


def _recalled(week: str) -> RecalledError:
    return RecalledError(
        f"The digest of {week} was recalled (`digest recall`), so no run sends it "
        f"again by itself. Send it on purpose with `digest run --week {week} "
        "--after-recall`, or a custom run with `after_recall: true`."
    )


def lease_heartbeat(
    engine: Engine, *, digest_id: int, owner: str, lease_seconds: int
) -> ledger.LeaseHeartbeat:
    """Keeps the run's lease alive while it plans and sends (a context manager)."""
    return ledger.LeaseHeartbeat(
        engine, digest_id=digest_id, owner=owner, ttl_seconds=lease_seconds
    )


def end_run(engine: Engine, *, digest_id: int, owner: str) -> None:
    ledger.release_lease(engine, digest_id=digest_id, owner=owner)


def sent_by_run(engine: Engine, *, digest_id: int, owner: str) -> tuple[int, int]:
    """(deliveries sent, batches that sent them) by the run `owner`."""
    with engine.connect() as connection:
        return ledger.sent_by_run(connection, digest_id=digest_id, owner=owner)


def reconcile(
    engine: Engine, *, digest_id: int
) -> tuple[dict[str, int], list[tuple[str, str, int]]]:
    """Settle rows of subscribers who left or events proved, count states, mark complete if done."""
    with engine.begin() as connection:
        ledger.suppress_unsendable(connection, digest_id=digest_id)
        events.apply_recorded(connection, digest_id=digest_id)
        counts = ledger.state_counts(connection, digest_id=digest_id)
        reasons = ledger.failure_reasons(connection, digest_id=digest_id)
        if not any(counts.get(state, 0) for state in OWNED_BY_SENDER):
            ledger.mark_completed(connection, digest_id=digest_id)
    return counts, reasons


def week_is_complete(engine: Engine, *, digest_id: int) -> bool:
    """Planning is done and no row is left for a rerun to work on."""
    with engine.connect() as connection:
        if not ledger.is_planned(connection, digest_id=digest_id):
            return False
        counts = ledger.state_counts(connection, digest_id=digest_id)
    return not any(counts.get(state, 0) for state in OPEN)


def settled_week(engine: Engine, week: IsoWeek) -> RunSummary | None:
    """The account of a week whose digest was sent and has nothing left to send, else None.

    Such a week needs no flow run (nor the Prefect server one would start): this is the answer a
    run would give, read from the ledger, events and departures applied as a run applies them.
    """
    prepared = preparation.frozen_content(engine, week)
    if prepared is None or prepared.digest_id is None:
        return None
    if not week_is_complete(engine, digest_id=prepared.digest_id):
        return None
    summary = RunSummary.of_content(str(week), prepared.digest_id, prepared.content, dry_run=False)
    summary.counts, summary.reasons = reconcile(engine, digest_id=prepared.digest_id)
    summary.already_complete = True
    summary.note = already_sent_note(week)
    return summary


def already_sent_note(week: IsoWeek) -> str:
    return f"{week} was already sent: nothing left to send."
