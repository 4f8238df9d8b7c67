"""The weekly Prefect flow end to end, with the real Prefect API (test harness)."""

from __future__ import annotations

from collections import Counter
from email import message_from_bytes
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.flow_engine import run_flow
from prefect.states import AwaitingRetry

from digest.config import get_settings
from digest.db import get_engine
from digest.delivery.ledger import digest_status
from digest.errors import RunIncompleteError, WeekError
from flows.weekly_digest import weekly_digest
from tests.fakes.fake_sendgrid import FakeSendGrid, Fault
from tests.support.faults import fail_call
from tests.support.scenario import WEEK, seed
from tests.support.sendgrid_env import send_through

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _status(url: str) -> tuple[int, dict[str, int]]:
    with get_engine(url).connect() as connection:
        return digest_status(connection, week=WEEK)


def test_flow_sends_each_subscriber_one_message_and_a_rerun_sends_nothing(
    settings: object, tmp_path: Path
) -> None:
    # One run mails every planned subscriber once; a second run for the week mails nobody.
    the_settings = get_settings()
    seed(the_settings, tmp_path)
    summary = weekly_digest(week=WEEK)
    assert summary.counts == {"sent": 6}
    files = sorted((tmp_path / "outbox" / WEEK).glob("*.eml"))
    assert len(files) == 6
    recipients = Counter(str(message_from_bytes(f.read_bytes())["To"]) for f in files)
    assert all(n == 1 for n in recipients.values())
    writer = next(f for f in files if "writer@example.com" in f.name)
    writer_message = message_from_bytes(writer.read_bytes())
    assert "Inkwell" in writer_message.as_string() or "Inkwell" in str(writer_message["Subject"])
    again = weekly_digest(week=WEEK)
    assert again.already_complete and again.sent_this_run == 0
    assert len(list((tmp_path / "outbox" / WEEK).glob("*.eml"))) == 6
    assert _status(the_settings.database_url) == (6, {"sent": 6})


def test_bad_week_parameter_fails_at_once_with_a_clear_message() -> None:
    # A malformed week never reaches the database: the run fails naming the expected form.
    with pytest.raises(Exception, match=r"2026-W47|YYYY-Www|pattern"):
        weekly_digest(week="2026-47")
    with pytest.raises(WeekError, match="has no ISO week 60"):
        weekly_digest(week="2026-W60")


def test_flow_parameter_schema_describes_every_parameter() -> None:
    # The UI's custom-run form shows a description for each parameter.
    from prefect.utilities.callables import parameter_schema

    schema = parameter_schema(weekly_digest.fn).model_dump()
    for name in ("week", "dry_run", "resend_uncertain", "retry_failed"):
        assert schema["properties"][name].get("description"), name


def test_dry_run_records_and_sends_nothing(settings: object, tmp_path: Path) -> None:
    # --dry-run renders and reports but leaves no delivery row and no message.
    the_settings = get_settings()
    seed(the_settings, tmp_path)
    summary = weekly_digest(week=WEEK, dry_run=True)
    assert summary.counts == {"would_send": 6, "would_skip": 0}
    assert _status(the_settings.database_url) == (0, {})
    assert not (tmp_path / "outbox").exists()


def test_retrying_the_same_flow_run_after_a_failed_send_skips_nobody_and_doubles_nobody(
    settings: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The UI's Retry re-runs the same flow run id: it must send exactly the rows still unsent.
    with FakeSendGrid(api_key="SG.test-key") as fake:
        the_settings = send_through(
            monkeypatch,
            fake,
            DIGEST_BATCH_SIZE="2",
            DIGEST_SEND_MAX_ATTEMPTS="2",
        )
        seed(the_settings, tmp_path, subscribers=7)
        # The first batch goes through, then SendGrid fails for good.
        fake.queue(Fault())
        fake.always(Fault(status=500, message="internal error"))
        state = weekly_digest(week=WEEK, return_state=True)
        assert state.is_failed()
        with pytest.raises(RunIncompleteError):
            state.result()
        total, counts = _status(the_settings.database_url)
        # At most the first batch (2 readers, or the 1 writing-only reader) stays sent: a 500
        # may hide an accepted request, so its provider batch is cancelled, and a first request
        # accepted into that same batch is taken back with it. Nothing is left in between.
        assert counts.get("sent", 0) in (0, 1, 2)
        assert counts.get("sent", 0) + counts.get("pending", 0) == total

        fake.always(None)
        flow_run_id = state.state_details.flow_run_id
        assert flow_run_id is not None
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(flow_run_id, AwaitingRetry(), force=True)
            flow_run = client.read_flow_run(flow_run_id)
        retried = run_flow(
            weekly_digest, flow_run=flow_run, parameters=flow_run.parameters, return_type="state"
        )
        assert retried.is_completed()
        delivered = Counter(m.to for m in fake.delivered)  # cancelled batches never arrive
        assert len(delivered) == total
        assert set(delivered.values()) == {1}
        assert _status(the_settings.database_url) == (total, {"sent": total})


def test_a_short_outage_is_ridden_out_and_sends_nobody_twice(
    settings: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two requests meet a 503. Each one's provider batch is cancelled and its rows go again, so
    # the same run sends everyone once and ends Completed. Which requests meet the outage is up
    # to the threads: a request accepted under a batch that a later 503 cancels is taken back
    # and sent again, so an address may be accepted twice; it is delivered once.
    with FakeSendGrid(api_key="SG.test-key") as fake:
        the_settings = send_through(monkeypatch, fake, DIGEST_SEND_MAX_ATTEMPTS="3")
        seed(the_settings, tmp_path, subscribers=7)
        fake.fail_next(2, 503, message="back soon")
        summary = weekly_digest(week=WEEK)
        total, counts = _status(the_settings.database_url)
        assert counts == {"sent": total}
        assert summary.sent_this_run == total
        delivered = Counter(m.to for m in fake.delivered)
        assert len(delivered) == total and set(delivered.values()) == {1}
        # Every delivered request is one recorded request, one per content variant.
        assert len({m.message_id for m in fake.delivered}) == summary.batches == 2
        assert [r.status for r in fake.requests].count(503) == 2
        taken_back = {m.batch_id for m in fake.accepted} - {m.batch_id for m in fake.delivered}
        assert all(fake.statuses.get(batch) == "cancel" for batch in taken_back)


def test_a_lane_that_crashes_mid_batch_fails_the_run_and_its_rows_turn_uncertain(
    settings: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The database fails once between the send and its record: the run must not end Completed,
    # and the rerun must neither resend that batch nor lose sight of it.
    from digest.delivery import ledger

    monkeypatch.setenv("DIGEST_BATCH_SIZE", "2")
    get_settings.cache_clear()
    the_settings = get_settings()
    seed(the_settings, tmp_path, subscribers=7)
    lost = RuntimeError("the database connection was lost")
    fail_call(monkeypatch, ledger, "mark_sent", call=1, error=lost)
    state = weekly_digest(week=WEEK, return_state=True)
    assert state.is_failed()
    with pytest.raises(RunIncompleteError, match=r"left `sending`"):
        state.result()
    total, counts = _status(the_settings.database_url)
    stuck = counts["sending"]
    assert stuck in (1, 2) and counts["sent"] == total - stuck

    again = weekly_digest(week=WEEK, return_state=True)
    assert again.is_failed()  # uncertain rows need a decision: the run says which command
    with pytest.raises(RunIncompleteError, match=r"--resend-uncertain"):
        again.result()
    assert _status(the_settings.database_url) == (
        total,
        {"sent": total - stuck, "uncertain": stuck},
    )
    outbox = list((tmp_path / "outbox" / WEEK).glob("*.eml"))
    assert len(outbox) == total  # the stuck batch went out once, and only once


def test_the_report_states_the_unsubscribe_headers_the_send_saw_on_every_message(
    settings: object, tmp_path: Path
) -> None:
    # The claim in the report is a count the send made, compared with the ledger's count.
    from digest.run.report import render_markdown

    seed(get_settings(), tmp_path)
    summary = weekly_digest(week=WEEK)
    assert summary.with_unsubscribe_headers == summary.sent_this_run == 6
    report = render_markdown(summary)
    assert "headers: on all 6 messages this run sent" in report
    assert "set on every message" not in report


def test_a_message_sent_without_the_unsubscribe_headers_fails_the_run(
    settings: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A defect that drops the one-click headers is seen by the send and fails the run, whose
    # report says on how many of the messages they were missing.
    from digest.errors import ComplianceError
    from digest.send import base

    monkeypatch.setattr(base, "recipient_headers", lambda url: {"List-Unsubscribe": f"<{url}>"})
    seed(get_settings(), tmp_path)
    with pytest.raises(ComplianceError, match="6 of the 6 messages this run sent went without"):
        weekly_digest(week=WEEK)


def test_a_variant_without_the_postal_address_is_refused_before_anything_is_sent(
    settings: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The variants are checked after planning, before the send: nobody gets such a digest.
    from digest.errors import ComplianceError
    from digest.run import compliance

    the_settings = get_settings()
    seed(the_settings, tmp_path)
    monkeypatch.setattr(compliance, "_postal_present", lambda address, body, text: False)
    with pytest.raises(ComplianceError, match="was not sent: a variant lacks DIGEST_POSTAL"):
        weekly_digest(week=WEEK)
    assert not (tmp_path / "outbox").exists()
    assert _status(the_settings.database_url)[1] == {"pending": 6}
