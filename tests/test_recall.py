"""`digest recall`: the editor's emergency stop cancels what SendGrid still holds, holds the week
until a run is started `--after-recall`, and releases the content when nothing went out."""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
import typer
from sqlalchemy import update

from digest.cli.recall import print_recall
from digest.config import Settings
from digest.db import get_engine
from digest.delivery import ledger, sending
from digest.errors import ConfigError, RecalledError, RunInProgressError
from digest.models import PROVIDER_BATCH_TABLE as PROVIDER_BATCH
from digest.models import Delivery
from digest.run import bookkeeping, outcome, preparation
from digest.run.outcome import RunSummary
from digest.send import get_backend
from digest.weeks import IsoWeek, utcnow
from tests.fakes.fake_sendgrid import FakeSendGrid, delivered_record
from tests.support import list_shape
from tests.support.cli import assert_user_error, run_digest
from tests.support.factories import write_catalog, write_subscribers
from tests.support.ledger_data import state_counts_of
from tests.support.prefect_server import PrefectServer
from tests.support.scenario import WEEK, week_tools
from tests.support.scheduled import (
    fake,
    planned_emails,
    prepare_week,
    recall_week,
    run_week,
    settings_with,
)
from tests.support.senders import send_of

__all__ = ["fake"]  # the fixture, shared by the scheduled-send and recall tests


def _compose_again(settings: Settings) -> int:
    """The week composed and planned anew from the catalog, as the next run does."""
    engine = get_engine(settings.database_url)
    edition = preparation.Edition.from_settings(settings)
    prepared = preparation.prepare_digest(engine, edition, IsoWeek.parse(WEEK), freeze=True)
    assert prepared.digest_id is not None
    preparation.plan(engine, edition, prepared)
    return prepared.digest_id


def _after_recall(settings: Settings, digest_id: int) -> None:
    """A run started `--after-recall` clears the mark at its start."""
    engine = get_engine(settings.database_url)
    owner = ledger.new_owner()
    bookkeeping.begin_run(
        engine,
        digest_id=digest_id,
        owner=owner,
        lease_seconds=60,
        resend_uncertain=False,
        after_recall=True,
    )
    bookkeeping.end_run(engine, digest_id=digest_id, owner=owner)


def test_recall_stops_every_batch_still_held_releases_the_content_and_holds_the_week(
    fake: FakeSendGrid,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
) -> None:
    # Sent 900 s ahead: every batch is cancelled, nobody gets the digest, the frozen content is
    # dropped, and no run sends the week again until one is started after the recall.
    settings = settings_with(monkeypatch, DIGEST_DATABASE_URL=database_url, DIGEST_BATCH_SIZE="2")
    digest_id = prepare_week(settings, tmp_path)
    run_week(settings, digest_id)
    result = recall_week(settings)
    assert (result.stopped, result.on_their_way, result.released) == (6, 0, True)
    assert fake.delivered == []
    assert set(fake.statuses) == {request.envelope["batch_id"] for request in fake.requests}
    with get_engine(settings.database_url).connect() as connection:
        assert ledger.find_digest(connection, WEEK) is None  # edits and catalog fixes apply
    digest_id = _compose_again(settings)
    with pytest.raises(RecalledError, match="--after-recall"):
        run_week(settings, digest_id)
    assert state_counts_of(settings, digest_id) == {"pending": 6}
    _after_recall(settings, digest_id)
    run_week(settings, digest_id)
    delivered = Counter(message.to for message in fake.delivered)
    assert delivered == Counter({email: 1 for email in planned_emails(settings, digest_id)})


def test_batches_too_close_to_their_send_time_are_counted_on_their_way(
    fake: FakeSendGrid,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    database_url: str,
) -> None:
    # A batch within the cancel deadline cannot be stopped: its rows stay `sent`, the content
    # stays frozen, and a run after the recall sends only what was stopped.
    settings = settings_with(monkeypatch, DIGEST_DATABASE_URL=database_url, DIGEST_BATCH_SIZE="2")
    digest_id = prepare_week(settings, tmp_path)
    run_week(settings, digest_id, requests_per_batch=1)  # a batch per request: 2 + 2 + 1 and 1 rows
    engine = get_engine(settings.database_url)
    with engine.begin() as connection:
        close = min(ledger.sent_batches(connection, digest_id=digest_id), key=lambda b: b.rows)
        soon = utcnow() + timedelta(seconds=60)
        connection.execute(
            update(Delivery)
            .where(Delivery.provider_batch_id == close.batch_id)  # type: ignore[arg-type]
            .values(send_at=soon)
        )
        connection.execute(
            update(PROVIDER_BATCH)
            .where(PROVIDER_BATCH.c.batch_id == close.batch_id)
            .values(send_at=soon)
        )
    assert close.rows == 1
    result = recall_week(settings)
    assert (result.stopped, result.on_their_way, result.released) == (5, 1, False)
    assert state_counts_of(settings, digest_id) == {"pending": 5, "sent": 1}
    assert len(fake.delivered) == 1
    with pytest.raises(RecalledError):
        run_week(settings, digest_id)
    _after_recall(settings, digest_id)
    run_week(settings, digest_id)
    delivered = Counter(message.to for message in fake.delivered)
    assert delivered == Counter({email: 1 for email in planned_emails(settings, digest_id)})
    assert state_counts_of(settings, digest_id) == {"sent": 6}


@pytest.mark.slow
def test_recall_stops_a_send_of_more_requests_than_the_provider_has_cancel_slots(
    fake: FakeSendGrid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # SendGrid keeps 10 batches cancelled at once; 60 requests (of one recipient each) share
    # one provider batch, so a recall stops all of them with slots to spare.
    settings = settings_with(monkeypatch, DIGEST_BATCH_SIZE="1")
    digest_id = prepare_week(settings, tmp_path, extra=54)
    run_week(settings, digest_id)
    assert len(fake.requests) == 60
    result = recall_week(settings)
    assert (result.stopped, result.on_their_way, result.problems) == (60, 0, ())
    assert fake.delivered == [] and len(fake.statuses) == 1


def test_recall_then_run_after_recall_from_the_command_line(
    tmp_path: Path, prefect_server: PrefectServer
) -> None:
    # As the editor and ops do it: run, recall (counts printed), a plain run refused with the way
    # out, `--after-recall` sends, and every subscriber ends with exactly one digest.
    record = tmp_path / "accepted.jsonl"
    with FakeSendGrid(api_key="SG.recall-key", record_path=record) as server:
        env = {
            "DIGEST_DATABASE_URL": f"sqlite:///{tmp_path / 'digest.db'}",
            "DIGEST_SECRET_KEY": os.environ["DIGEST_SECRET_KEY"],
            "DIGEST_EMAIL_BACKEND": "sendgrid",
            "SENDGRID_API_KEY": "SG.recall-key",
            "DIGEST_SENDGRID_HOST": server.url,
            "DIGEST_BATCH_SIZE": "4",
            **prefect_server.env(),
        }
        catalog = write_catalog(tmp_path / "catalog.json", week_tools())
        people = write_subscribers(
            tmp_path / "people.csv", [{"email": f"r{i}@example.com"} for i in range(10)]
        )
        for kind, path in (("catalog", catalog), ("subscribers", people)):
            assert run_digest(kind, "import", str(path), cwd=tmp_path, env=env).returncode == 0
        assert run_digest("run", "--week", WEEK, cwd=tmp_path, env=env).returncode == 0
        recalled = run_digest("recall", "--week", WEEK, cwd=tmp_path, env=env)
        assert recalled.returncode == 0, recalled.stderr
        assert "10 deliveries stopped" in recalled.stdout
        assert "0 already on their way" in recalled.stdout
        assert delivered_record(record) == []
        shown = run_digest("status", "--week", WEEK, "--json", cwd=tmp_path, env=env)
        assert json.loads(shown.stdout)["recalled"] is True
        # Refused at once, before any Prefect server would start.
        refused = run_digest("run", "--week", WEEK, cwd=tmp_path, env=env)
        assert_user_error(refused, "recalled", "--after-recall")
        assert "Prefect" not in refused.stderr
        # The refused run froze nothing again: the released week still takes the editor's fix.
        note = ["--intro", "Resent with a corrected price."]
        edited = run_digest("edit", "--week", WEEK, *note, cwd=tmp_path, env=env)
        assert edited.returncode == 0, edited.stderr
        again = run_digest("run", "--week", WEEK, "--after-recall", cwd=tmp_path, env=env)
        assert again.returncode == 0, again.stderr[-3000:]
        status = run_digest("status", "--week", WEEK, "--json", cwd=tmp_path, env=env)
        assert json.loads(status.stdout)["counts"] == {"sent": 10}
        delivered = Counter(entry["to"] for entry in delivered_record(record))
        assert delivered == Counter({f"r{i}@example.com": 1 for i in range(10)})


def test_a_recall_while_a_run_holds_the_week_marks_it_and_the_run_stops_at_its_next_claim(
    fake: FakeSendGrid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A run that does not let go of the week within the recall's wait: the recall is refused
    # with what to do, but the week is marked, so the run stops before its next request and
    # ends saying it was recalled.
    settings = settings_with(monkeypatch, DIGEST_BATCH_SIZE="2")
    digest_id = prepare_week(settings, tmp_path)
    engine = get_engine(settings.database_url)
    owner = ledger.new_owner()  # this process: a live run
    bookkeeping.begin_run(
        engine, digest_id=digest_id, owner=owner, lease_seconds=60, resend_uncertain=False
    )
    with pytest.raises(RunInProgressError, match="marked recalled") as refused:
        recall_week(settings, wait_seconds=0.5)
    assert "what it already sent is still scheduled" in str(refused.value)
    assert "nothing was sent by this run" not in str(refused.value)  # a run's advice, not ours
    plan = sending.send_plan(engine, digest_id=digest_id, week=WEEK, owner=owner)
    stop = sending.RunStop()
    report = send_of(settings, plan, stop=stop)
    assert report.requests == [] and stop.kind is sending.StopKind.RECALLED
    summary = RunSummary(week=WEEK, digest_id=digest_id, subject=None)
    assert isinstance(outcome.run_error(summary, stop), RecalledError)
    assert fake.requests == [] and state_counts_of(settings, digest_id) == {"pending": 6}


@pytest.mark.parametrize("lead", ["300", "600", "660"])
def test_a_lead_time_that_leaves_no_time_to_cancel_is_refused(
    lead: str, fake: FakeSendGrid, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A lead within SendGrid's cancel deadline, plus a request's whole timeout and the 30 s a
    # cancel takes to ask and confirm, could leave a lost answer nobody can cancel: a clear
    # error before anything is sent. One second more is fine.
    settings = settings_with(monkeypatch, DIGEST_SEND_LEAD_SECONDS=lead)
    with pytest.raises(ConfigError, match=f"DIGEST_SEND_LEAD_SECONDS={lead} leaves no time"):
        get_backend(settings)
    assert get_backend(settings_with(monkeypatch, DIGEST_SEND_LEAD_SECONDS="661")) is not None


def test_a_recall_that_cannot_reach_sendgrid_stops_at_once_and_says_to_run_it_again(
    fake: FakeSendGrid,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Unreachable (or a refused key): no batch fares better, so the recall stops asking at the
    # first, exits 1 and says nothing is certain yet; run again once fixed, it stops them all.
    settings = settings_with(monkeypatch, DIGEST_BATCH_SIZE="1")
    digest_id = prepare_week(settings, tmp_path, extra=30)
    run_week(settings, digest_id)
    unreachable = settings_with(
        monkeypatch, DIGEST_SENDGRID_HOST="http://127.0.0.1:9", DIGEST_SEND_MAX_ATTEMPTS="2"
    )
    result = recall_week(unreachable)
    assert result.stopped == 0 and result.on_their_way == 36
    assert result.unreachable is not None and "could not connect" in result.unreachable
    with pytest.raises(typer.Exit) as ended:
        print_recall(WEEK, result, deadline=600)
    assert ended.value.exit_code == 1
    said = " ".join(capsys.readouterr().err.split())
    assert "is not finished" in said and f"run `digest recall --week {WEEK}` again" in said
    assert fake.statuses == {}
    monkeypatch.setenv("DIGEST_SENDGRID_HOST", fake.url)
    again = recall_week(settings_with(monkeypatch))
    assert (again.stopped, again.on_their_way, again.unreachable) == (36, 0, None)


def test_recall_of_a_64_variant_week_stops_everyone_and_after_recall_sends_each_once(
    fake: FakeSendGrid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    # A real list's shape: 64 variants, dozens of requests. They share one provider batch, so
    # the recall's cancels stop all of them; `--after-recall` then mails each subscriber once.
    settings = settings_with(monkeypatch, DIGEST_DATABASE_URL=database_url)
    digest_id = prepare_week(settings, tmp_path, shape=2500)
    run_week(settings, digest_id)
    assert len(fake.requests) >= list_shape.VARIANTS
    result = recall_week(settings)
    assert (result.stopped, result.on_their_way, result.problems) == (2500, 0, ())
    assert fake.delivered == []
    digest_id = _compose_again(settings)
    _after_recall(settings, digest_id)
    run_week(settings, digest_id)
    delivered = Counter(message.to for message in fake.delivered)
    assert delivered == Counter({email: 1 for email in planned_emails(settings, digest_id)})
    assert len(delivered) == 2500


def test_a_recall_during_a_send_waits_for_it_to_stop_then_stops_all_it_sent(
    fake: FakeSendGrid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The editor recalls while the run is sending (SendGrid slow): the run stops at its next
    # claim, the recall waits for it to let go of the week, then cancels everything it sent.
    settings = settings_with(monkeypatch, DIGEST_BATCH_SIZE="50")
    digest_id = prepare_week(settings, tmp_path, shape=1200)
    fake.set_delay(0.2)
    engine = get_engine(settings.database_url)
    owner = ledger.new_owner()
    bookkeeping.begin_run(
        engine, digest_id=digest_id, owner=owner, lease_seconds=30, resend_uncertain=False
    )
    plan = sending.send_plan(engine, digest_id=digest_id, week=WEEK, owner=owner)
    stop = sending.RunStop()
    reports: list[sending.SendReport] = []

    def run() -> None:
        try:
            reports.append(send_of(settings, plan, stop=stop))
        finally:
            bookkeeping.end_run(engine, digest_id=digest_id, owner=owner)

    sender = threading.Thread(target=run)
    sender.start()
    while not fake.requests:
        time.sleep(0.05)
    result = recall_week(settings)
    sender.join()
    assert stop.kind is sending.StopKind.RECALLED
    assert result.on_their_way == 0 and result.stopped == sum(r.sent for r in reports[0].requests)
    assert result.stopped > 0 and fake.delivered == []
    # Nobody holds the digest: its content is released, so edits apply before it goes again.
    assert result.released and state_counts_of(settings, digest_id) == {}


def test_a_run_of_a_recalled_week_is_refused_at_once_without_a_prefect_server(
    fake: FakeSendGrid, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `digest run` of a recalled week says so and how to send it anyway, before it would start
    # a temporary Prefect server (about 20 s) only to refuse.
    settings = settings_with(monkeypatch)
    digest_id = prepare_week(settings, tmp_path)
    run_week(settings, digest_id)
    recall_week(settings)
    env = {
        name: os.environ[name] for name in os.environ if name.startswith(("DIGEST_", "SENDGRID_"))
    }
    env.pop("PREFECT_API_URL", None)
    clock = time.monotonic()
    refused = run_digest("run", "--week", WEEK, cwd=tmp_path, env=env)
    assert_user_error(refused, "recalled", "--after-recall")
    assert "temporary Prefect server" not in refused.stderr
    assert time.monotonic() - clock < 15
