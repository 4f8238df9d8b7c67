"""Exactly once with nobody choosing: requests held by SendGrid until `send_at`, under a few
provider batches that span variants, opened only within the cancel budget; cancelled and resent
when an answer is lost or a run dies. Through the real client and the fake SendGrid."""

from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from digest.config import Settings
from digest.db import get_engine, session_scope
from digest.delivery import ledger, sending
from digest.delivery.cancelling import canceller_for
from digest.delivery.events import NormalizedEvent, apply_events
from digest.delivery.provider_batches import RunBatches
from digest.models import Delivery
from digest.send import get_backend
from digest.send.base import ProviderBatch
from digest.states import DeliveryState
from digest.weeks import utcnow
from tests.fakes.fake_sendgrid import FakeSendGrid, Fault
from tests.support import list_shape
from tests.support.ledger_data import state_counts_of
from tests.support.scenario import WEEK
from tests.support.scheduled import (
    die_with_a_batch_in_flight,
    fake,
    planned_emails,
    prepare_week,
    run_week,
    settings_with,
)
from tests.support.senders import sender_for

__all__ = ["fake"]  # the fixture, shared by the scheduled-send and recall tests

# A lead time the tests can wait out: SendGrid's deadline 1 s (the fake's too), requests time
# out after 2 s, and a cancel needs 30 s to be asked and confirmed: 36 leaves 3 s to join.
SHORT = {
    "DIGEST_SEND_LEAD_SECONDS": "36",
    "DIGEST_SENDGRID_CANCEL_DEADLINE_SECONDS": "1",
    "DIGEST_SENDGRID_TIMEOUT_SECONDS": "2",
}


def _delivered(fake: FakeSendGrid) -> Counter[str]:
    return Counter(message.to for message in fake.delivered)


def _exactly_once(fake: FakeSendGrid, settings: Settings, digest_id: int) -> None:
    assert _delivered(fake) == Counter({email: 1 for email in planned_emails(settings, digest_id)})


def _cancel_posts(fake: FakeSendGrid) -> list[int]:
    return [status for method, path, status in fake.calls if path == "/v3/user/scheduled_sends"]


@pytest.mark.parametrize("lost", [(1,), (2, 4), (1, 2), (3, 5)])
def test_lost_answers_are_cancelled_and_resent_so_everyone_gets_it_exactly_once(
    lost: tuple[int, ...],
    fake: FakeSendGrid,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
) -> None:
    # SendGrid accepts a request and the answer never comes back: its batch is cancelled once,
    # the cancel confirmed, every row of the batch sent again under a new one; by the fake's
    # own record every planned subscriber gets the digest once, with nobody choosing.
    settings = settings_with(monkeypatch, DIGEST_DATABASE_URL=database_url, DIGEST_BATCH_SIZE="3")
    digest_id = prepare_week(settings, tmp_path, extra=12)
    fake.lose_answers(*lost)
    _, report = run_week(settings, digest_id)
    _exactly_once(fake, settings, digest_id)
    assert state_counts_of(settings, digest_id) == {"sent": 18}
    # One cancel per batch an answer was lost under, never a second of the same batch.
    lost_batches = {r.envelope["batch_id"] for r in fake.requests if r.status is None}
    assert set(fake.statuses) == lost_batches and set(fake.statuses.values()) == {"cancel"}
    assert _cancel_posts(fake) == [201] * len(lost_batches)
    # What the cancelled batches held was discarded, and went again.
    discarded = [m for m in fake.accepted if m.batch_id in lost_batches]
    assert len(fake.accepted) == 18 + len(discarded)
    assert report.lost_answers == len(lost)


def test_a_lost_answer_resends_every_request_of_its_batch_whatever_the_variant(
    fake: FakeSendGrid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Six requests of two variants share one provider batch; the third answer is lost, so the
    # whole batch is cancelled and the rows the others had delivered go back and out again.
    settings = settings_with(monkeypatch, DIGEST_BATCH_SIZE="1")
    digest_id = prepare_week(settings, tmp_path)
    fake.lose_answers(3)
    run_week(settings, digest_id)
    first = fake.requests[0].envelope["batch_id"]
    held = [r for r in fake.requests if r.envelope["batch_id"] == first]
    assert len(held) >= 3 and len({r.envelope["subject"] for r in held}) == 2
    assert fake.statuses == {first: "cancel"}
    _exactly_once(fake, settings, digest_id)
    assert state_counts_of(settings, digest_id) == {"sent": 6}


def test_a_week_of_64_variants_goes_under_one_batch_id(
    fake: FakeSendGrid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Batches span variants: a real list's 64 variants and 2,000 subscribers make dozens of
    # requests, all under one batch id and one send time, so a recall needs one cancel.
    settings = settings_with(monkeypatch)
    digest_id = prepare_week(settings, tmp_path, shape=2000)
    before = utcnow()
    _, report = run_week(settings, digest_id)
    assert len({r.variant_id for r in report.requests}) == list_shape.VARIANTS
    assert {r.envelope["batch_id"] for r in fake.requests} == report.batch_ids
    assert len(report.batch_ids) == 1 and fake.stats()["batch_ids"] == 1
    send_at = {r.envelope["send_at"] for r in fake.requests}
    assert len(send_at) == 1 and 899 <= send_at.pop() - before.timestamp() <= 905
    _exactly_once(fake, settings, digest_id)


def _batches(settings: Settings, backend: object, digest_id: int, **kwargs: object) -> RunBatches:
    engine = get_engine(settings.database_url)
    canceller = canceller_for(settings, engine=engine, backend=backend)  # type: ignore[arg-type]
    return RunBatches(canceller, digest_id, settings.send_lead_seconds, **kwargs)  # type: ignore[arg-type]


def test_a_batch_takes_its_share_of_requests_while_it_may_and_gives_back_an_unused_slot(
    fake: FakeSendGrid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A batch takes requests until it is full or its join time is up (so a lost answer can
    # still be cancelled); a lost answer closes it; a batch no request joined frees its slot.
    settings = settings_with(monkeypatch)
    digest_id = prepare_week(settings, tmp_path)
    stop = sending.RunStop()
    with get_backend(settings) as backend:
        batches = _batches(settings, backend, digest_id, requests_per_batch=2)
        first = batches.current(stop)
        assert first is not None and batches.current(stop) == first
        assert batches.may_send(first)
        second = batches.current(stop)
        assert second not in (None, first)  # full after two
        assert second is not None and second.join_by < second.send_at - timedelta(seconds=600)
        batches.lost(second, "test: answer lost")
        assert not batches.may_send(second)
        third = batches.current(stop)
        assert third not in (None, first, second)
        batches.close()
    engine = get_engine(settings.database_url)
    with engine.connect() as connection:
        # No request was claimed under any of them: every slot is given back at close, except
        # the cancelled batch's, which holds its slot until its send time passes.
        assert ledger.slots_held(connection, now=utcnow(), too_late=timedelta(0)).held == 1


def test_no_lead_time_sends_at_once_as_before(
    fake: FakeSendGrid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DIGEST_SEND_LEAD_SECONDS=0: no batch id, no send_at, no call but mail/send.
    settings = settings_with(monkeypatch, DIGEST_SEND_LEAD_SECONDS="0")
    digest_id = prepare_week(settings, tmp_path)
    run_week(settings, digest_id)
    assert fake.calls == []
    assert all("batch_id" not in r.envelope and "send_at" not in r.envelope for r in fake.requests)
    assert state_counts_of(settings, digest_id) == {"sent": 6}


def test_a_cancel_refused_as_too_late_leaves_the_rows_uncertain_and_events_settle_them(
    fake: FakeSendGrid,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
) -> None:
    # SendGrid refuses the cancel: the lost batch may go out, so the lost request's rows are
    # `uncertain`, never resent; a provider event then proves them accepted.
    settings = settings_with(monkeypatch, DIGEST_DATABASE_URL=database_url, DIGEST_BATCH_SIZE="2")
    digest_id = prepare_week(settings, tmp_path)
    fake.set_cancel_deadline(1000)  # later than the lead: every cancel is too late
    fake.lose_answers(1)
    _, report = run_week(settings, digest_id)
    lost = [r for r in report.requests if r.lost]
    assert len(lost) == 1 and lost[0].uncertain == lost[0].claimed
    assert state_counts_of(settings, digest_id) == {
        "sent": 6 - lost[0].claimed,
        "uncertain": lost[0].claimed,
    }
    _exactly_once(fake, settings, digest_id)
    assert _cancel_posts(fake) == [400]
    run_week(settings, digest_id)  # a plain rerun resends nothing
    assert len(fake.accepted) == 6
    engine = get_engine(settings.database_url)
    with engine.connect() as connection:
        uncertain = connection.execute(
            select(Delivery.id).where(Delivery.state == "uncertain")  # type: ignore[arg-type]
        ).scalars()
        events = [
            NormalizedEvent(f"p{i}", "processed", i, DeliveryState.SENT, None, None, None, {})
            for i in uncertain
        ]
    with session_scope(engine) as session:
        apply_events(session=session, events=events)
    assert state_counts_of(settings, digest_id) == {"sent": 6}


def test_too_close_to_the_send_time_no_cancel_is_asked(
    fake: FakeSendGrid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Past our own deadline (plus the margin a cancel takes) a cancel could not be trusted: a
    # loss under a batch due that soon asks nothing and says why.
    settings = settings_with(monkeypatch)
    digest_id = prepare_week(settings, tmp_path)
    soon = utcnow() + timedelta(seconds=60)
    with get_backend(settings) as backend:
        batches = _batches(settings, backend, digest_id)
        verdict = batches.lost(ProviderBatch("batch-due-soon", soon, soon), "test: answer lost")
    assert not verdict.cancelled and verdict.refused and "too close" in verdict.refused
    assert fake.calls == []


def test_a_dead_runs_batch_is_cancelled_by_the_next_run_and_sent_once(
    fake: FakeSendGrid,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
) -> None:
    # The next run (a plain rerun) cancels the batch the dead run left in flight, confirms it,
    # and sends those rows again: nobody twice, nobody missing, no `--resend-uncertain`.
    settings = settings_with(monkeypatch, DIGEST_DATABASE_URL=database_url)
    digest_id = prepare_week(settings, tmp_path)
    left = die_with_a_batch_in_flight(settings, digest_id)
    started, _ = run_week(settings, digest_id)
    assert started["cancelled_and_resent"] == left and started["found_uncertain"] == 0
    _exactly_once(fake, settings, digest_id)
    assert state_counts_of(settings, digest_id) == {"sent": 6}


def test_a_dead_runs_batch_is_cancelled_with_the_requests_it_had_recorded_and_all_go_again(
    fake: FakeSendGrid,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
) -> None:
    # The dead run recorded two accepted requests of its batch and died during the third: the
    # cancel stops all three, so all three requests' rows are sent again, once.
    settings = settings_with(monkeypatch, DIGEST_DATABASE_URL=database_url)
    digest_id = prepare_week(settings, tmp_path)
    die_with_a_batch_in_flight(settings, digest_id, recorded=2)
    assert state_counts_of(settings, digest_id) == {"pending": 3, "sending": 1, "sent": 2}
    started, _ = run_week(settings, digest_id)
    assert started["cancelled_and_resent"] == 3 and started["found_uncertain"] == 0
    _exactly_once(fake, settings, digest_id)
    assert state_counts_of(settings, digest_id) == {"sent": 6}


def test_rows_of_a_batch_whose_cancel_was_confirmed_go_again_even_if_the_ledger_missed_it(
    fake: FakeSendGrid,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
) -> None:
    # A holder (run or recall) died between the provider's confirmed cancel, which it recorded,
    # and putting the batch's rows back: the next run's lease mends it, and they go again.
    settings = settings_with(monkeypatch, DIGEST_DATABASE_URL=database_url)
    digest_id = prepare_week(settings, tmp_path)
    run_week(settings, digest_id)
    engine = get_engine(settings.database_url)
    with engine.connect() as connection:
        held = ledger.sent_batches(connection, digest_id=digest_id)[0]
    with get_backend(settings) as backend:
        canceller = canceller_for(settings, engine=engine, backend=backend)
        assert canceller is not None
        canceller.cancel(batch_id=held.batch_id, digest_id=digest_id, send_at=held.send_at)
    assert len(_delivered(fake)) == 6 - held.rows
    run_week(settings, digest_id)
    _exactly_once(fake, settings, digest_id)
    assert state_counts_of(settings, digest_id) == {"sent": 6}


def test_a_dead_runs_batch_whose_cancel_is_refused_stays_uncertain_and_is_never_resent(
    fake: FakeSendGrid,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
) -> None:
    # SendGrid refuses the cancel (too late by its clock): the rows may arrive, so they are
    # `uncertain` and no rerun sends them again.
    settings = settings_with(monkeypatch, DIGEST_DATABASE_URL=database_url)
    digest_id = prepare_week(settings, tmp_path)
    left = die_with_a_batch_in_flight(settings, digest_id)
    fake.set_cancel_deadline(1000)
    started, _ = run_week(settings, digest_id)
    assert started["found_uncertain"] == left and started["cancelled_and_resent"] == 0
    run_week(settings, digest_id)
    _exactly_once(fake, settings, digest_id)
    assert state_counts_of(settings, digest_id) == {"sent": 6 - left, "uncertain": left}


def test_lost_answers_in_a_row_stop_the_run_with_every_row_pending(
    fake: FakeSendGrid,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
) -> None:
    # Every answer lost: each loss cancels its batch, and after DIGEST_SEND_MAX_ATTEMPTS in a
    # row the run stops with its rows `pending`, nobody mailed, no `uncertain` row.
    settings = settings_with(
        monkeypatch,
        DIGEST_DATABASE_URL=database_url,
        DIGEST_BATCH_SIZE="1",
        DIGEST_SEND_MAX_ATTEMPTS="3",
    )
    digest_id = prepare_week(settings, tmp_path)
    fake.always(Fault(drop=True, after_record=True))
    _, report = run_week(settings, digest_id)
    assert report.stop_kind is sending.StopKind.PROVIDER_UNAVAILABLE
    # Requests in flight at once may add their losses before the stop is said: at least three.
    said = re.search(r"lost (\d+) times in a row", report.stop or "")
    assert said and int(said.group(1)) >= 3
    assert fake.delivered == []
    assert state_counts_of(settings, digest_id) == {"pending": 6}
    assert set(fake.statuses.values()) == {"cancel"}


def _fill_slots(settings: Settings, digest_id: int, count: int, *, due_in: float) -> None:
    """`count` standing cancels of batches due in `due_in` seconds: slots someone else holds."""
    engine = get_engine(settings.database_url)
    with engine.begin() as connection:
        for number in range(count):
            ledger.record_cancel(
                connection,
                batch_id=f"someone-elses-{number}",
                digest_id=digest_id,
                send_at=utcnow() + timedelta(seconds=due_in),
            )


def test_no_request_leaves_without_a_free_cancel_slot_and_the_run_says_when_to_retry(
    fake: FakeSendGrid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    # All ten cancel slots are held (standing cancels due in 15 minutes): the run opens no
    # batch and sends nothing, rather than a request whose lost answer could not be cancelled;
    # it stops with every row pending and names the time to run again.
    settings = settings_with(monkeypatch, DIGEST_DATABASE_URL=database_url)
    digest_id = prepare_week(settings, tmp_path)
    _fill_slots(settings, digest_id, 10, due_in=900)
    _, report = run_week(settings, digest_id, slot_wait_seconds=0)
    assert report.stop_kind is sending.StopKind.NO_CANCEL_SLOT
    assert (
        report.stop and "Run again after" in report.stop and "10 of the provider's" in report.stop
    )
    assert fake.requests == [] and fake.stats()["batch_ids"] == 0
    assert state_counts_of(settings, digest_id) == {"pending": 6}


def test_a_run_waits_for_a_cancel_slot_to_free_then_sends_everyone_once(
    fake: FakeSendGrid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Nine slots held by standing cancels, the tenth by a live batch of another run that can
    # no longer be cancelled in a few seconds: the run waits for it, says so, and sends.
    settings = settings_with(monkeypatch, **SHORT)
    fake.set_cancel_deadline(1)
    digest_id = prepare_week(settings, tmp_path)
    _fill_slots(settings, digest_id, 9, due_in=900)
    engine = get_engine(settings.database_url)
    with engine.begin() as connection:
        # Cancellable until 31 s before its send time: for 3 more seconds.
        ledger.reserve_batch(
            connection,
            batch_id="another-runs-live-batch",
            digest_id=digest_id,
            send_at=utcnow() + timedelta(seconds=34),
            slots=10,
            too_late=timedelta(seconds=31),
        )
    waits: list[str] = []
    owner = ledger.new_owner()
    ledger.acquire_lease(engine, digest_id=digest_id, owner=owner, ttl_seconds=60)
    plan = sending.send_plan(engine, digest_id=digest_id, week=WEEK, owner=owner)
    with get_backend(settings) as backend:
        report = sending.send(
            sender_for(settings, backend), plan, stop=sending.RunStop(), on_wait=waits.append
        )
    assert report.stop is None and waits and "waiting" in waits[0]
    _exactly_once(fake, settings, digest_id)


def test_an_outage_then_an_immediate_rerun_leaves_no_uncertain_row(
    fake: FakeSendGrid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    # A 5xx outage on a 64-variant week: every request's batch is cancelled and the run stops
    # with its rows pending; a plain rerun at once, with slots still held by those cancels,
    # sends everyone exactly once: no `uncertain` row, nobody twice, nobody missing.
    settings = settings_with(
        monkeypatch, DIGEST_DATABASE_URL=database_url, DIGEST_SEND_MAX_ATTEMPTS="3"
    )
    digest_id = prepare_week(settings, tmp_path, shape=1500)
    fake.always(Fault(status=503, message="outage"))
    _, stopped = run_week(settings, digest_id)
    assert stopped.stop_kind is sending.StopKind.PROVIDER_UNAVAILABLE
    assert "uncertain" not in state_counts_of(settings, digest_id)
    fake.always(None)
    _, again = run_week(settings, digest_id)
    assert again.stop is None
    assert state_counts_of(settings, digest_id) == {"sent": 1500}
    _exactly_once(fake, settings, digest_id)


def test_a_hung_request_with_a_short_lead_is_cancelled_in_time_and_sent_once(
    fake: FakeSendGrid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SendGrid holds an accepted request past the 2 s timeout: its batch can still be
    # cancelled before the deadline (the lead leaves room for the timeout and the cancel), so
    # the rows go again, once, and none is left uncertain.
    settings = settings_with(monkeypatch, **SHORT)
    fake.set_cancel_deadline(1)
    digest_id = prepare_week(settings, tmp_path, shape=300)
    fake.queue(Fault(delay=4.0))  # recorded, answered after the client gave up
    _, report = run_week(settings, digest_id)
    assert report.lost_answers >= 1 and report.stop is None
    assert state_counts_of(settings, digest_id) == {"sent": 300}
    _exactly_once(fake, settings, digest_id)


def test_a_lead_time_without_room_for_the_timeout_and_a_cancel_is_refused(
    fake: FakeSendGrid, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A request may take the whole timeout before its answer counts as lost, and its cancel
    # must still fit before the deadline: such settings are refused with the numbers to fix.
    from digest.errors import ConfigError

    settings = settings_with(
        monkeypatch,
        DIGEST_SEND_LEAD_SECONDS="650",
        DIGEST_SENDGRID_TIMEOUT_SECONDS="30",
    )
    with pytest.raises(ConfigError) as refused:
        get_backend(settings)
    said = str(refused.value)
    assert "DIGEST_SEND_LEAD_SECONDS=650" in said and "above 660" in said
    assert "DIGEST_SENDGRID_TIMEOUT_SECONDS" in said


def test_a_second_cancel_of_a_batch_is_refused_and_read_back_as_cancelled(
    fake: FakeSendGrid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SendGrid answers a second cancel of the same batch with 400: the backend reads the
    # batch's status back rather than assuming, and reports the cancel as confirmed.
    settings = settings_with(monkeypatch)
    digest_id = prepare_week(settings, tmp_path)
    with get_backend(settings) as backend:
        sender = sender_for(settings, backend)
        assert sender.canceller is not None
        held = sender.canceller.open_batch(digest_id=digest_id, lead_seconds=900)
        assert isinstance(held, ProviderBatch)
        backend.cancel_batch(held.id)  # type: ignore[attr-defined]
        backend.cancel_batch(held.id)  # type: ignore[attr-defined]
    assert _cancel_posts(fake) == [201, 400]
    assert fake.statuses == {held.id: "cancel"}
