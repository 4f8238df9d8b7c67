"""Exactly once with nobody choosing: requests held by SendGrid until `send_at`, cancelled and
resent when their answer is lost or their run dies, through the real client and the fake."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from digest.config import Settings, get_settings
from digest.db import get_engine, session_scope
from digest.delivery import cancelling, ledger, sending
from digest.delivery.cancelling import canceller_for
from digest.delivery.events import NormalizedEvent, apply_events
from digest.models import DIGEST_TABLE as DIGEST
from digest.models import Delivery
from digest.run import bookkeeping, preparation
from digest.send import get_backend
from digest.send.base import OutgoingBatch, ProviderBatch
from digest.states import DeliveryState
from digest.weeks import IsoWeek, utcnow
from tests.fakes.fake_sendgrid import FakeSendGrid
from tests.support.ledger_data import make_subscribers
from tests.support.scenario import WEEK, seed
from tests.support.senders import lane_of, sender_for

API_KEY = "SG.scheduled-test-key"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeSendGrid:
    server = FakeSendGrid(api_key=API_KEY).start()
    monkeypatch.setenv("DIGEST_EMAIL_BACKEND", "sendgrid")
    monkeypatch.setenv("SENDGRID_API_KEY", API_KEY)
    monkeypatch.setenv("DIGEST_SENDGRID_HOST", server.url)
    get_settings.cache_clear()
    yield server  # type: ignore[misc]
    server.stop()


def _settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    return get_settings()


def _prepare(settings: Settings, tmp_path: Path, *, batch_size: int, extra: int = 0) -> int:
    seed(settings, tmp_path)
    engine = get_engine(settings.database_url)
    if extra:
        make_subscribers(engine, extra, start=1000)
    edition = preparation.Edition.from_settings(settings)
    prepared = preparation.prepare_digest(engine, edition, IsoWeek.parse(WEEK), freeze=True)
    assert prepared.digest_id is not None
    preparation.plan(engine, edition, prepared, page_size=batch_size)
    return prepared.digest_id


def _run(settings: Settings, digest_id: int) -> tuple[dict[str, int], list[sending.LaneReport]]:
    """One run as the flow makes it: begin (recovering a dead run's batches), lanes, end."""
    engine = get_engine(settings.database_url)
    owner = ledger.new_owner()
    with get_backend(settings) as backend:
        started = bookkeeping.begin_run(
            engine,
            digest_id=digest_id,
            owner=owner,
            lease_seconds=settings.lease_seconds,
            resend_uncertain=False,
            canceller=canceller_for(settings, engine=engine, backend=backend),
        )
    plan = sending.send_plan(
        engine, digest_id=digest_id, week=WEEK, owner=owner, batch_size=settings.batch_size
    )
    stop = sending.RunStop()
    lanes = [lane_of(settings, plan, lane=lane, stop=stop) for lane in plan.lanes]
    bookkeeping.end_run(engine, digest_id=digest_id, owner=owner)
    return started, lanes


def _counts(settings: Settings, digest_id: int) -> dict[str, int]:
    with get_engine(settings.database_url).connect() as connection:
        return ledger.state_counts(connection, digest_id=digest_id)


def _planned(settings: Settings, digest_id: int) -> set[str]:
    with get_engine(settings.database_url).connect() as connection:
        return set(
            connection.execute(
                select(Delivery.email).where(Delivery.digest_id == digest_id)  # type: ignore[arg-type]
            ).scalars()
        )


def _delivered(fake: FakeSendGrid) -> Counter[str]:
    return Counter(message.to for message in fake.delivered)


@pytest.mark.parametrize("lost", [(1,), (2, 4), (1, 2), (3, 5)])
def test_lost_answers_are_cancelled_and_resent_so_everyone_gets_it_exactly_once(
    lost: tuple[int, ...],
    fake: FakeSendGrid,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
) -> None:
    # SendGrid accepts a request and the answer never comes back: the batch is cancelled, the
    # cancel confirmed, the rows sent under a new batch; by the fake's own record every planned
    # subscriber gets the digest once, and the ledger says `sent` for all, with nobody choosing.
    settings = _settings(monkeypatch, DIGEST_DATABASE_URL=database_url, DIGEST_BATCH_SIZE="3")
    digest_id = _prepare(settings, tmp_path, batch_size=3, extra=12)
    fake.lose_answers(*lost)
    _, lanes = _run(settings, digest_id)
    planned = _planned(settings, digest_id)
    assert _delivered(fake) == Counter({email: 1 for email in planned})
    # Everything accepted under a cancelled batch was sent again: the lost request's rows, and
    # those of the batch's earlier requests.
    discarded = [m for m in fake.accepted if fake.statuses.get(m.batch_id or "") == "cancel"]
    requeued = sum(batch.requeued for lane in lanes for batch in lane.batches)
    assert len(discarded) == 3 * len(lost) + requeued
    assert len(fake.accepted) == len(planned) + len(discarded)
    assert _counts(settings, digest_id) == {"sent": len(planned)}
    assert sum(lane.sent for lane in lanes) == len(planned)
    cancels = [call for call in fake.calls if call[:2] == ("POST", "/v3/user/scheduled_sends")]
    assert [status for *_, status in cancels] == [201] * len(lost)
    assert set(fake.statuses.values()) == {"cancel"} and len(fake.statuses) == len(lost)


def test_a_lost_answer_late_in_a_batch_resends_its_earlier_requests_too(
    fake: FakeSendGrid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Requests 1-3 share one provider batch; the third answer is lost, so the whole batch is
    # cancelled and the rows the first two had delivered go back to the queue and out again.
    settings = _settings(monkeypatch, DIGEST_BATCH_SIZE="1")
    digest_id = _prepare(settings, tmp_path, batch_size=1)
    fake.lose_answers(3)
    _, lanes = _run(settings, digest_id)
    first_batch = fake.requests[0].envelope["batch_id"]
    assert [r.envelope["batch_id"] for r in fake.requests[:3]] == [first_batch] * 3
    assert fake.statuses == {first_batch: "cancel"}
    assert sum(batch.requeued for batch in lanes[0].batches) == 2
    assert _delivered(fake) == Counter({email: 1 for email in _planned(settings, digest_id)})
    assert _counts(settings, digest_id) == {"sent": 6}


def test_two_lost_answers_in_a_5000_send_end_with_no_duplicate_and_nobody_missing(
    fake: FakeSendGrid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The case: 5,000 subscribers, batches of 1,000, two answers lost; one run ends
    # with everyone sent once and no uncertain row.
    settings = _settings(monkeypatch)
    digest_id = _prepare(settings, tmp_path, batch_size=1000, extra=5000 - 6)
    fake.lose_answers(2, 4)
    _run(settings, digest_id)
    delivered = _delivered(fake)
    assert len(delivered) == 5000 and set(delivered.values()) == {1}
    assert _counts(settings, digest_id) == {"sent": 5000}


def test_a_lanes_requests_of_one_variant_share_a_batch_and_its_send_time(
    fake: FakeSendGrid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Requests share a provider batch up to its size, within one variant, all due at the lead
    # after the batch's first request; the claim writes batch and time on the rows.
    settings = _settings(monkeypatch, DIGEST_BATCH_SIZE="1")
    digest_id = _prepare(settings, tmp_path, batch_size=1)
    engine = get_engine(settings.database_url)
    owner = ledger.new_owner()
    ledger.acquire_lease(engine, digest_id=digest_id, owner=owner, ttl_seconds=60)
    plan = sending.send_plan(engine, digest_id=digest_id, week=WEEK, owner=owner, batch_size=1)
    before = utcnow()
    with get_backend(settings) as backend:
        sender = replace(sender_for(settings, backend), requests_per_batch=2)
        sending.send_lane(sender, plan, lane=0, stop=sending.RunStop())
    with engine.connect() as connection:
        rows = connection.execute(
            select(Delivery.variant_id, Delivery.provider_batch_id, Delivery.send_at).order_by(  # type: ignore[call-overload]
                Delivery.claimed_at
            )
        ).all()
    per_batch: dict[str, set[tuple[int, object]]] = {}
    for variant_id, batch_id, send_at in rows:
        per_batch.setdefault(batch_id, set()).add((variant_id, send_at))
    # 6 rows in two variants (5 + 1): batches of 2, 2, 1 and 1 request.
    assert sorted(Counter(batch_id for _, batch_id, _ in rows).values()) == [1, 1, 2, 2]
    assert all(len(shared) == 1 for shared in per_batch.values())  # one variant, one send time
    for request in fake.requests:
        lead = request.envelope["send_at"] - before.timestamp()
        assert 899 <= lead <= 905
    assert {r.envelope["batch_id"] for r in fake.requests} == set(per_batch)
    # A batch no request joined (its claim found the variant done) serves the next variant.
    made = [call for call in fake.calls if call[:2] == ("POST", "/v3/mail/batch")]
    assert len(made) - len(per_batch) <= 1


def test_a_lanes_batch_is_shared_while_it_has_room_and_within_one_variant(
    fake: FakeSendGrid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(monkeypatch)
    _prepare(settings, tmp_path, batch_size=1000)
    with get_backend(settings) as backend:
        batches = sending.LaneBatches(replace(sender_for(settings, backend), requests_per_batch=2))
        first = batches.batch_for(1)
        batches.joined()
        assert batches.batch_for(1) == first  # room for one more
        batches.joined()
        full = batches.batch_for(1)
        assert full is not None and full != first
        assert batches.batch_for(2) == full  # nobody joined it: it serves the next variant
        batches.joined()
        other = batches.batch_for(1)
        assert other not in (first, full)  # joined by variant 2's request: not for variant 1
        batches.close()  # a lost answer
        assert batches.batch_for(1) not in (first, full, other)


def test_a_batch_takes_no_request_once_its_time_is_up(
    fake: FakeSendGrid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A batch stays open for half the time its first request leaves to cancel it, at most a
    # minute: an ambiguous answer to its last request can still be cancelled in time.
    assert sending.batch_open_seconds(900, 600) == sending.BATCH_OPEN_SECONDS
    assert sending.batch_open_seconds(700, 600) == 35  # half of 700 - 600 - the 30 s margin
    assert sending.batch_open_seconds(620, 600) == 0
    settings = _settings(monkeypatch)
    _prepare(settings, tmp_path, batch_size=1000)
    with get_backend(settings) as backend:
        sender = replace(sender_for(settings, backend), batch_open_seconds=0)
        batches = sending.LaneBatches(sender)
        first = batches.batch_for(1)
        batches.joined()
        assert batches.batch_for(1) != first  # room left, but its time is up


def test_no_lead_time_sends_at_once_as_before(
    fake: FakeSendGrid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DIGEST_SEND_LEAD_SECONDS=0: no batch id, no send_at, no call but mail/send.
    settings = _settings(monkeypatch, DIGEST_SEND_LEAD_SECONDS="0")
    digest_id = _prepare(settings, tmp_path, batch_size=1000)
    _run(settings, digest_id)
    assert fake.calls == []
    assert all("batch_id" not in r.envelope and "send_at" not in r.envelope for r in fake.requests)
    assert _counts(settings, digest_id) == {"sent": 6}


def test_a_cancel_refused_as_too_late_leaves_the_rows_uncertain_and_events_settle_them(
    fake: FakeSendGrid,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
) -> None:
    # SendGrid refuses the cancel: the lost batch may go out, so its rows are `uncertain`, never
    # resent; a provider event then proves them accepted.
    settings = _settings(monkeypatch, DIGEST_DATABASE_URL=database_url, DIGEST_BATCH_SIZE="2")
    digest_id = _prepare(settings, tmp_path, batch_size=2)
    fake.set_cancel_deadline(1000)  # later than the lead: every cancel is too late
    fake.lose_answers(1)
    _run(settings, digest_id)
    assert _counts(settings, digest_id) == {"sent": 4, "uncertain": 2}
    assert _delivered(fake) == Counter({email: 1 for email in _planned(settings, digest_id)})
    assert [c[2] for c in fake.calls if c[1] == "/v3/user/scheduled_sends"] == [400]
    _run(settings, digest_id)  # a plain rerun resends nothing
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
    assert _counts(settings, digest_id) == {"sent": 6}


def test_too_close_to_the_send_time_no_cancel_is_asked_and_the_rows_are_uncertain(
    fake: FakeSendGrid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Past our own deadline (plus a margin for the request) a cancel could not be trusted: none
    # is asked, the rows are `uncertain`. (A margin larger than the lead leaves: too close.)
    settings = _settings(monkeypatch, DIGEST_SEND_LEAD_SECONDS="700")
    monkeypatch.setattr(cancelling, "CANCEL_MARGIN_SECONDS", 200)
    fake.set_cancel_deadline(0)
    digest_id = _prepare(settings, tmp_path, batch_size=1000)
    fake.lose_answers(1)
    _run(settings, digest_id)
    assert [c for c in fake.calls if "scheduled_sends" in c[1]] == []
    counts = _counts(settings, digest_id)
    assert counts.get("uncertain") in (1, 5) and sum(counts.values()) == 6


def _die_with_a_batch_in_flight(
    settings: Settings, digest_id: int, fake: FakeSendGrid, *, recorded: int = 0
) -> int:
    """A run sends `recorded` + 1 requests under one provider batch, records the answers of the
    first `recorded`, and dies before recording the last (its lease then lapses). Returns the
    rows it left `sending`."""
    engine = get_engine(settings.database_url)
    dead = "another-host:1:deadbeef"
    ledger.acquire_lease(engine, digest_id=digest_id, owner=dead, ttl_seconds=5)
    with get_backend(settings) as backend:
        held = ProviderBatch(
            backend.new_batch_id(),  # type: ignore[attr-defined]
            utcnow() + timedelta(seconds=settings.send_lead_seconds),
        )
        sender = sending.Sender.from_settings(settings, engine=engine, backend=backend)
        for request in range(recorded + 1):
            claimed = _claim_and_send(sender, digest_id, dead, held, limit=1 if recorded else 1000)
            if request < recorded:
                with engine.begin() as connection:
                    ledger.mark_sent(connection, batch=claimed, message_id=None)
    with engine.begin() as connection:
        connection.execute(update(DIGEST).values(lease_expires_at=utcnow().replace(year=2000)))
    return len(claimed)


def _claim_and_send(
    sender: sending.Sender, digest_id: int, owner: str, held: ProviderBatch, *, limit: int
) -> ledger.ClaimedBatch:
    with sender.engine.begin() as connection:
        variant = sorted(ledger.pending_by_variant(connection, digest_id=digest_id))[0]
        claimed = ledger.claim_batch(
            connection,
            digest_id=digest_id,
            variant_id=variant,
            owner=owner,
            limit=limit,
            provider_batch_id=held.id,
            send_at=held.send_at,
        )
        body = ledger.variant_row(connection, variant_id=variant)
    sender.backend.send_batch(
        OutgoingBatch(
            digest_id=digest_id,
            week=WEEK,
            subject=body["subject"],
            html=body["html"],
            text=body["text"],
            recipients=[sending.recipient_for(sender.links, c) for c in claimed.recipients],
            from_email=sender.from_email,
            from_name=sender.from_name,
            provider_batch=held,
        )
    )
    return claimed


def test_a_dead_runs_batch_is_cancelled_by_the_next_run_and_sent_once(
    fake: FakeSendGrid,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
) -> None:
    # The next run (a plain rerun) cancels the batch the dead run left in flight, confirms it,
    # and sends those rows again: nobody twice, nobody missing, no `--resend-uncertain`.
    settings = _settings(monkeypatch, DIGEST_DATABASE_URL=database_url)
    digest_id = _prepare(settings, tmp_path, batch_size=1000)
    left = _die_with_a_batch_in_flight(settings, digest_id, fake)
    started, _ = _run(settings, digest_id)
    assert started["cancelled_and_resent"] == left and started["found_uncertain"] == 0
    assert _delivered(fake) == Counter({email: 1 for email in _planned(settings, digest_id)})
    assert _counts(settings, digest_id) == {"sent": 6}


def test_a_dead_runs_batch_is_cancelled_with_the_requests_it_had_recorded_and_all_go_again(
    fake: FakeSendGrid,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
) -> None:
    # The dead run recorded two accepted requests of its batch and died during the third: the
    # cancel stops all three, so all three requests' rows are sent again, once.
    settings = _settings(monkeypatch, DIGEST_DATABASE_URL=database_url)
    digest_id = _prepare(settings, tmp_path, batch_size=1000)
    _die_with_a_batch_in_flight(settings, digest_id, fake, recorded=2)
    assert _counts(settings, digest_id) == {"pending": 3, "sending": 1, "sent": 2}
    started, _ = _run(settings, digest_id)
    assert started["cancelled_and_resent"] == 3 and started["found_uncertain"] == 0
    assert _delivered(fake) == Counter({email: 1 for email in _planned(settings, digest_id)})
    assert _counts(settings, digest_id) == {"sent": 6}


def test_rows_of_a_batch_whose_cancel_was_confirmed_go_again_even_if_the_ledger_missed_it(
    fake: FakeSendGrid,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
) -> None:
    # A holder (run or recall) died between the provider's confirmed cancel, which it recorded,
    # and putting the batch's rows back: the next run's lease mends it, and they go again.
    settings = _settings(monkeypatch, DIGEST_DATABASE_URL=database_url)
    digest_id = _prepare(settings, tmp_path, batch_size=1000)
    _run(settings, digest_id)
    engine = get_engine(settings.database_url)
    with engine.connect() as connection:
        held = ledger.sent_batches(connection, digest_id=digest_id)[0]
    with get_backend(settings) as backend:
        canceller = canceller_for(settings, engine=engine, backend=backend)
        assert canceller is not None
        canceller.cancel(batch_id=held.batch_id, digest_id=digest_id, send_at=held.send_at)
    assert len(_delivered(fake)) == 6 - held.rows
    _run(settings, digest_id)
    assert _delivered(fake) == Counter({email: 1 for email in _planned(settings, digest_id)})
    assert _counts(settings, digest_id) == {"sent": 6}


def test_a_dead_runs_batch_whose_cancel_is_refused_stays_uncertain_and_is_never_resent(
    fake: FakeSendGrid,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
) -> None:
    # SendGrid refuses the cancel (too late by its clock): the rows may arrive, so they are
    # `uncertain` and no rerun sends them again.
    settings = _settings(monkeypatch, DIGEST_DATABASE_URL=database_url)
    digest_id = _prepare(settings, tmp_path, batch_size=1000)
    left = _die_with_a_batch_in_flight(settings, digest_id, fake)
    fake.set_cancel_deadline(1000)
    started, _ = _run(settings, digest_id)
    assert started["found_uncertain"] == left and started["cancelled_and_resent"] == 0
    _run(settings, digest_id)
    assert _delivered(fake) == Counter({email: 1 for email in _planned(settings, digest_id)})
    assert _counts(settings, digest_id) == {"sent": 6 - left, "uncertain": left}


def test_too_many_lost_answers_stop_the_run_before_the_cancel_slots_run_out(
    fake: FakeSendGrid,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
) -> None:
    # SendGrid holds at most 10 cancels: when lost answers keep coming the run stops with its
    # rows `pending` (each lost batch cancelled), keeping a slot for every lane in flight.
    settings = _settings(
        monkeypatch,
        DIGEST_DATABASE_URL=database_url,
        DIGEST_BATCH_SIZE="1",
        DIGEST_SEND_MAX_ATTEMPTS="20",
    )
    digest_id = _prepare(settings, tmp_path, batch_size=1)
    fake.lose_answers(*range(1, 20))
    _, lanes = _run(settings, digest_id)
    assert any(lane.stop_kind is sending.StopKind.PROVIDER_UNAVAILABLE for lane in lanes)
    said = " ".join(lane.stop or "" for lane in lanes)
    assert "6 of the 10 batches the provider keeps cancelled" in said
    assert "Retry in 15 minutes" in said
    assert len(fake.statuses) == 10 - sending.SENDER_LANES
    assert fake.delivered == []
    assert _counts(settings, digest_id) == {"pending": 6}
