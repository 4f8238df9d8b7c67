"""The send path end to end without Prefect: ledger + real sendgrid client + the fake SendGrid."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import update

from digest.config import Settings, get_settings
from digest.db import get_engine, session_scope
from digest.delivery import sending
from digest.delivery.events import NormalizedEvent, apply_events
from digest.delivery.ledger import (
    ClaimedBatch,
    acquire_lease,
    claim_batch,
    mark_sent,
    new_owner,
    pending_by_variant,
)
from digest.errors import SendAuthError
from digest.models import DIGEST_TABLE as DIGEST
from digest.models import Delivery, Subscriber
from digest.run import bookkeeping, outcome
from digest.run.outcome import RunSummary
from digest.states import DeliveryState
from digest.weeks import utcnow
from tests.fakes.fake_sendgrid import FakeSendGrid, Fault
from tests.support.ledger_data import state_counts_of
from tests.support.scenario import WEEK
from tests.support.send_path import (
    begin_new_run,
    begin_owned_run,
    prepare_batched_week,
    send_plan_of,
)
from tests.support.senders import send_of
from tests.support.sendgrid_env import send_through

API_KEY = "SG.pipeline-test-key"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeSendGrid:
    server = FakeSendGrid(api_key=API_KEY).start()
    send_through(monkeypatch, server, DIGEST_SEND_MAX_ATTEMPTS="2")
    yield server  # type: ignore[misc]
    server.stop()


def _send(
    settings: Settings, digest_id: int, owner: str, stop: sending.RunStop | None = None
) -> sending.SendReport:
    """The run's send on a plan of its own, run to the end in this thread."""
    plan = send_plan_of(settings, digest_id, owner)
    return send_of(settings, plan, stop=stop or sending.RunStop())


def _sent(report: sending.SendReport) -> int:
    return sum(request.sent for request in report.requests)


def _reconcile(
    settings: Settings, digest_id: int
) -> tuple[dict[str, int], list[tuple[str, str, int]]]:
    return bookkeeping.reconcile(get_engine(settings.database_url), digest_id=digest_id)


def _sent_by(settings: Settings, digest_id: int, owner: str) -> tuple[int, int]:
    return bookkeeping.sent_by_run(
        get_engine(settings.database_url), digest_id=digest_id, owner=owner
    )


def _send_all(settings: Settings, digest_id: int, owner: str) -> list[sending.RequestReport]:
    return _send(settings, digest_id, owner).requests


def test_every_message_carries_its_own_ids_tokens_and_unsubscribe_headers(
    fake: FakeSendGrid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each personalization is one subscriber with string custom args and their own List-Unsubscribe.
    settings, digest_id = prepare_batched_week(get_settings(), tmp_path, batch_size=1000)
    owner = begin_new_run(settings, digest_id)
    _send_all(settings, digest_id, owner)
    accepted = fake.accepted
    assert len(accepted) == 6
    seen_urls = set()
    for message in accepted:
        assert message.custom_args["digest_id"] == str(digest_id)
        assert isinstance(message.custom_args["delivery_id"], str)
        unsubscribe = message.substitutions["%%unsubscribe_url%%"]
        assert unsubscribe.startswith(settings.site_url + "/unsubscribe/")
        assert message.headers["List-Unsubscribe"] == f"<{unsubscribe}>"
        assert message.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        seen_urls.add(unsubscribe)
    assert len(seen_urls) == 6
    assert state_counts_of(settings, digest_id) == {"sent": 6}


@pytest.mark.parametrize("lead", ["0", "900"])
def test_a_rejected_key_stops_everything_and_leaves_the_rest_pending(
    lead: str, fake: FakeSendGrid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 401: no row is marked failed or sent; the whole run stops; the key appears nowhere. With a
    # lead time the key is refused when the batch id is made, before any row is claimed.
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.wrong-key-1234567890")
    monkeypatch.setenv("DIGEST_SEND_LEAD_SECONDS", lead)
    get_settings.cache_clear()
    settings, digest_id = prepare_batched_week(get_settings(), tmp_path, batch_size=2)
    owner = begin_new_run(settings, digest_id)
    stop = sending.RunStop()
    first = _send(settings, digest_id, owner, stop=stop)
    if lead == "0":
        # Requests in flight at once: every one that left was refused and handed back.
        assert first.requests and all(r.released == r.claimed for r in first.requests)
        assert 1 <= len(fake.requests) <= len(first.requests)
    else:
        assert first.requests == [] and fake.requests == []
        assert fake.calls == [("POST", "/v3/mail/batch", 401)]
    assert stop.kind is sending.StopKind.KEY_REFUSED
    assert "SG.wrong-key" not in stop.reason
    again = _send(settings, digest_id, owner, stop=stop)  # a stopped run sends nothing more
    assert again.requests == [] and again.stop and "rejected the API key" in again.stop
    assert state_counts_of(settings, digest_id) == {"pending": 6}
    summary = RunSummary(week=WEEK, digest_id=digest_id, subject=None)
    summary.counts, summary.reasons = _reconcile(settings, digest_id)
    error = outcome.run_error(summary, stop)
    assert isinstance(error, SendAuthError)
    assert "SENDGRID_API_KEY" in str(error) and "SG.wrong-key" not in str(error)


def test_a_subscriber_who_unsubscribes_after_planning_is_never_sent_to(
    fake: FakeSendGrid, tmp_path: Path
) -> None:
    # Suppression wins over the frozen plan: the row ends `suppressed`, the fake never sees them.
    settings, digest_id = prepare_batched_week(get_settings(), tmp_path, batch_size=1000)
    with get_engine(settings.database_url).begin() as connection:
        connection.execute(
            update(Subscriber)
            .where(Subscriber.email == "reader2@example.com")
            .values(status="unsubscribed")
        )
    owner = begin_new_run(settings, digest_id)
    _send_all(settings, digest_id, owner)
    _reconcile(settings, digest_id)
    assert "reader2@example.com" not in {m.to for m in fake.accepted}
    assert state_counts_of(settings, digest_id) == {"sent": 5, "suppressed": 1}


def test_four_senders_on_postgresql_send_each_subscriber_once(
    postgres_url: str, fake: FakeSendGrid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Several workers on one digest (SKIP LOCKED claims): nobody twice, nobody missed.
    from digest.db import upgrade

    monkeypatch.setenv("DIGEST_DATABASE_URL", postgres_url)
    get_settings.cache_clear()
    upgrade(postgres_url)
    settings, digest_id = prepare_batched_week(get_settings(), tmp_path, batch_size=50, extra=994)
    owner = begin_new_run(settings, digest_id)
    plan = send_plan_of(settings, digest_id, owner)  # one plan shared by every sender
    stop = sending.RunStop()
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []
    lanes: list[sending.SendReport] = []

    def sender() -> None:
        barrier.wait()
        try:
            lanes.append(send_of(settings, plan, stop=stop))
        except BaseException as exc:  # pragma: no cover - reported by the assertion
            errors.append(exc)

    threads = [threading.Thread(target=sender) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    received = Counter(m.to for m in fake.accepted)
    assert len(received) == 1000 and set(received.values()) == {1}
    assert state_counts_of(settings, digest_id) == {"sent": 1000}
    # Every sender found work: claims interleave rather than one sender doing it all.
    assert all(lane.requests for lane in lanes)
    assert sum(_sent(lane) for lane in lanes) == 1000
    # SKIP LOCKED may hand a sender a short claim, so count requests from their own reports.
    requests = sum(len(lane.requests) for lane in lanes)
    assert requests >= 20
    assert _sent_by(settings, digest_id, owner) == (1000, requests)


def test_transient_failures_leave_rows_pending_for_the_next_run(
    fake: FakeSendGrid, tmp_path: Path
) -> None:
    # 5xx after every attempt (sending at once) hands rows back (`pending`, attempt counted) and
    # stops the send; the next run sends them.
    settings, digest_id = prepare_batched_week(get_settings(), tmp_path, batch_size=1000)
    settings = settings.model_copy(update={"send_lead_seconds": 0})
    owner = begin_new_run(settings, digest_id)
    fake.always(Fault(status=503, message="try later"))
    stop = sending.RunStop()
    stopped = _send(settings, digest_id, owner, stop=stop)
    assert stop.kind is sending.StopKind.PROVIDER_UNAVAILABLE and "try later" in stop.reason
    # Requests of both variants may have left at once (5 rows and 1): all handed back.
    assert 1 <= len(stopped.requests) <= 2
    assert all(r.released == r.claimed for r in stopped.requests)
    assert state_counts_of(settings, digest_id) == {"pending": 6}
    fake.always(None)
    _send_all(settings, digest_id, owner)
    assert Counter(m.to for m in fake.accepted) == Counter(
        {f"reader{i}@example.com": 1 for i in range(5)} | {"writer@example.com": 1}
    )


def test_a_send_stopped_by_lost_answers_is_resumed_by_its_retry(
    fake: FakeSendGrid, tmp_path: Path
) -> None:
    # The send stops with its rows back in `pending`; running it again sends exactly what is
    # left, once.
    settings, digest_id = prepare_batched_week(get_settings(), tmp_path, batch_size=2)
    owner = begin_new_run(settings, digest_id)
    plan = send_plan_of(settings, digest_id, owner)  # a retried run gets the same plan
    fake.queue(Fault())  # the first request goes through
    fake.always(Fault(status=503, message="try later"))
    stopped = send_of(settings, plan)
    assert stopped.stop_kind is sending.StopKind.PROVIDER_UNAVAILABLE
    # A 503 may hide an accepted request, so its provider batch is cancelled; the first
    # request, accepted into that same batch, is taken back with it.
    assert state_counts_of(settings, digest_id) == {"pending": 6}
    fake.always(None)
    retried = send_of(settings, plan)
    assert _sent(retried) == 6
    assert Counter(m.to for m in fake.delivered) == Counter(
        {f"reader{i}@example.com": 1 for i in range(5)} | {"writer@example.com": 1}
    )
    assert _sent_by(settings, digest_id, owner)[0] == 6


def test_a_send_covers_every_variant_and_only_counts_its_own_run(
    fake: FakeSendGrid, tmp_path: Path
) -> None:
    # One send drains both variants (5 + 1 rows: 3 + 1 requests); another run's owner has
    # sent nothing.
    settings, digest_id = prepare_batched_week(get_settings(), tmp_path, batch_size=2)
    owner = begin_new_run(settings, digest_id)
    with get_engine(settings.database_url).connect() as connection:
        variants = set(pending_by_variant(connection, digest_id=digest_id))
    assert len(variants) == 2
    report = _send(settings, digest_id, owner)
    assert report.stop is None and len(report.requests) == 4
    assert {request.variant_id for request in report.requests} == variants
    assert state_counts_of(settings, digest_id) == {"sent": 6}
    assert _sent_by(settings, digest_id, owner) == (6, len(report.requests))
    assert _sent_by(settings, digest_id, new_owner()) == (0, 0)


def _record_event(settings: Settings, delivery_id: int, state: DeliveryState) -> None:
    """The webhook's path for one provider event: stored, applied where the ledger allows."""
    event = NormalizedEvent(
        f"evt-{delivery_id}-{state.value}", state.value, delivery_id, state, None, None, None, {}
    )
    with session_scope(get_engine(settings.database_url)) as session:
        apply_events(session=session, events=[event])


def _claim_all(settings: Settings, digest_id: int, owner: str) -> list[ClaimedBatch]:
    with get_engine(settings.database_url).begin() as connection:
        return [
            claim_batch(connection, digest_id=digest_id, variant_id=v, owner=owner, limit=1000)
            for v in sorted(pending_by_variant(connection, digest_id=digest_id))
        ]


def test_events_that_came_while_a_dead_run_was_sending_keep_rows_from_a_resend(
    fake: FakeSendGrid, tmp_path: Path
) -> None:
    # A run dies after SendGrid accepted its batch; delivered events arrive while the rows are
    # still `sending`. The rerun finds them proven: --resend-uncertain mails only the others.
    settings, digest_id = prepare_batched_week(get_settings(), tmp_path, batch_size=1000)
    engine = get_engine(settings.database_url)
    dead = "another-host:1:deadbeef"
    acquire_lease(engine, digest_id=digest_id, owner=dead, ttl_seconds=5)
    claimed = [r for batch in _claim_all(settings, digest_id, dead) for r in batch.recipients]
    proven = claimed[:2]
    for recipient in proven:
        _record_event(settings, recipient.delivery_id, DeliveryState.DELIVERED)
    assert state_counts_of(settings, digest_id) == {"sending": 6}  # recorded, not applied yet
    with engine.begin() as connection:
        connection.execute(update(DIGEST).values(lease_expires_at=utcnow().replace(year=2000)))

    owner = new_owner()
    started = begin_owned_run(settings, digest_id, owner, resend_uncertain=True)
    assert started == {
        "found_uncertain": 6,
        "cancelled_and_resent": 0,  # claimed without a provider batch: nothing to cancel
        "left_sending": 0,
        "settled_by_events": 2,
        "requeued_uncertain": 4,
        "requeued_failed": 0,
    }
    _send(settings, digest_id, owner)
    received = Counter(m.to for m in fake.accepted)
    assert set(received) == {r.email for r in claimed[2:]} and set(received.values()) == {1}
    assert state_counts_of(settings, digest_id) == {"delivered": 2, "sent": 4}


def test_an_event_that_beat_the_senders_record_is_applied_when_the_run_ends(
    fake: FakeSendGrid, tmp_path: Path
) -> None:
    # The provider's event can arrive before the sender writes `sent`; reconcile applies it.
    settings, digest_id = prepare_batched_week(get_settings(), tmp_path, batch_size=1000)
    owner = begin_new_run(settings, digest_id)
    batches = _claim_all(settings, digest_id, owner)
    early = batches[0].recipients[0].delivery_id
    _record_event(settings, early, DeliveryState.BOUNCED)
    with get_engine(settings.database_url).begin() as connection:
        for batch in batches:
            mark_sent(connection, batch=batch, message_id="accepted")
    assert state_counts_of(settings, digest_id) == {"sent": 6}
    counts, _ = _reconcile(settings, digest_id)
    assert counts == {"bounced": 1, "sent": 5}


def _break_address(settings: Settings, digest_id: int, email: str) -> None:
    """Legacy data: a planned row whose address SendGrid will refuse."""
    with get_engine(settings.database_url).begin() as connection:
        connection.execute(
            update(Delivery)
            .where(Delivery.digest_id == digest_id, Delivery.email == email)
            .values(email="reader2 at example")
        )


def test_a_400_naming_one_recipient_fails_only_that_recipient_and_sends_the_rest(
    fake: FakeSendGrid, tmp_path: Path
) -> None:
    # SendGrid refuses a whole request for one bad address; only that row may pay for it.
    settings, digest_id = prepare_batched_week(get_settings(), tmp_path, batch_size=1000)
    _break_address(settings, digest_id, "reader2@example.com")
    owner = begin_new_run(settings, digest_id)
    stop = sending.RunStop()
    _send(settings, digest_id, owner, stop=stop)
    assert not stop.is_set()
    assert state_counts_of(settings, digest_id) == {"sent": 5, "failed": 1}
    assert {m.to for m in fake.accepted} == {
        "reader0@example.com",
        "reader1@example.com",
        "reader3@example.com",
        "reader4@example.com",
        "writer@example.com",
    }
    summary = RunSummary(week=WEEK, digest_id=digest_id, subject=None)
    summary.counts, summary.reasons = _reconcile(settings, digest_id)
    assert summary.reasons == [
        (
            "failed",
            "SendGrid refused this recipient: Does not contain a valid address. (field to.0.email)",
            1,
        )
    ]
    error = outcome.run_error(summary, stop)
    assert error is not None and "--retry-failed" in str(error)


def test_a_400_naming_no_recipient_stops_the_run_with_every_row_pending(
    fake: FakeSendGrid, tmp_path: Path
) -> None:
    # A refused sender or content is no recipient's fault: nothing is failed, the run stops.
    settings, digest_id = prepare_batched_week(get_settings(), tmp_path, batch_size=2)
    settings = settings.model_copy(update={"from_email": "not an address"})
    owner = begin_new_run(settings, digest_id)
    stop = sending.RunStop()
    report = _send(settings, digest_id, owner, stop=stop)
    assert stop.kind is sending.StopKind.REQUEST_REFUSED
    # The first refusal stops the send; requests already in flight were refused the same way.
    assert 1 <= len(fake.requests) <= len(report.requests)
    assert state_counts_of(settings, digest_id) == {"pending": 6}
    summary = RunSummary(week=WEEK, digest_id=digest_id, subject=None)
    summary.counts, summary.reasons = _reconcile(settings, digest_id)
    error = outcome.run_error(summary, stop)
    assert error is not None
    assert "from.email" in str(error) and "worker" in str(error) and "Retry" in str(error)


def test_retry_failed_sends_the_refused_rows_once_the_cause_is_fixed(
    fake: FakeSendGrid, tmp_path: Path
) -> None:
    # After a fix, --retry-failed puts `failed` rows back; nobody else is mailed again.
    settings, digest_id = prepare_batched_week(get_settings(), tmp_path, batch_size=1000)
    _break_address(settings, digest_id, "reader2@example.com")
    first = begin_new_run(settings, digest_id)
    _send(settings, digest_id, first)
    bookkeeping.end_run(get_engine(settings.database_url), digest_id=digest_id, owner=first)
    with get_engine(settings.database_url).begin() as connection:
        connection.execute(
            update(Delivery)
            .where(Delivery.digest_id == digest_id, Delivery.state == "failed")
            .values(email="reader2@example.com")
        )
    owner = new_owner()
    started = begin_owned_run(settings, digest_id, owner, resend_uncertain=False, retry_failed=True)
    assert started["requeued_failed"] == 1
    _send(settings, digest_id, owner)
    received = Counter(m.to for m in fake.accepted)
    assert len(received) == 6 and set(received.values()) == {1}
    assert state_counts_of(settings, digest_id) == {"sent": 6}
