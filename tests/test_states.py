"""The delivery state machine: the table, the code checked against it, its copy in the docs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import text, update
from sqlalchemy.engine import Engine

from digest.config import Settings, get_settings
from digest.db import ensure_schema, session_scope
from digest.delivery import ledger, sending
from digest.delivery.events import NormalizedEvent, apply_events
from digest.models import DIGEST_TABLE, Subscriber
from digest.run import bookkeeping, preparation
from digest.run.outcome import RunSummary, incomplete_message
from digest.send.base import (
    BaseBackend,
    BatchResult,
    OutgoingBatch,
    PermanentSendError,
    TransientSendError,
)
from digest.states import (
    EVENT_RANK,
    MOVES,
    OWNED_BY_SENDER,
    PLANNED,
    Cause,
    DeliveryState,
    is_allowed,
    moves_markdown,
    targets_from,
)
from digest.weeks import IsoWeek, utcnow
from tests.support.ledger_data import make_subscribers
from tests.support.scenario import WEEK, seed

S = DeliveryState
MOVES_DOC = Path(__file__).resolve().parents[1] / "docs" / "exactly-once.md"


def test_from_sending_a_row_goes_only_to_an_outcome_or_uncertain() -> None:
    # The question a newcomer asks first, answered by the table alone.
    assert targets_from(S.SENDING) == {
        S.SENT: {Cause.ACCEPTED},
        S.FAILED: {Cause.REFUSED},
        S.PENDING: {
            Cause.TRANSIENT,
            Cause.NEIGHBOUR_REFUSED,
            Cause.REQUEST_REFUSED,
            Cause.NOT_LEFT,
            Cause.CANCELLED_RESEND,
            Cause.RUN_DIED_CANCELLED,
        },
        S.UNCERTAIN: {Cause.RUN_DIED, Cause.CANCEL_IMPOSSIBLE},
    }


def test_no_move_goes_backwards() -> None:
    # Events never lower a row's rank; only named causes ever put a row back to `pending`.
    for move in MOVES:
        if move.cause is Cause.EVENT:
            assert EVENT_RANK[move.target] >= EVENT_RANK[move.source], move
            assert move.source not in OWNED_BY_SENDER, move
    back_to_pending = {m.cause for m in MOVES if m.target is S.PENDING}
    assert back_to_pending == {
        Cause.TRANSIENT,
        Cause.NEIGHBOUR_REFUSED,
        Cause.REQUEST_REFUSED,
        Cause.NOT_LEFT,
        Cause.RESEND_ON_PURPOSE,
        Cause.RETRY_FAILED,
        Cause.CANCELLED_RESEND,
        Cause.RUN_DIED_CANCELLED,
        Cause.RECALLED,
    }


def test_every_state_is_reachable_and_the_table_has_no_repeats() -> None:
    # A state nothing leads to is dead vocabulary; a move listed twice says nothing new.
    reached = set(PLANNED) | {m.target for m in MOVES}
    assert reached == set(DeliveryState)
    assert len({(m.source, m.target, m.cause) for m in MOVES}) == len(MOVES)


def test_the_documented_table_of_moves_is_the_state_machine() -> None:
    # docs/exactly-once.md's table is generated from MOVES; regenerate it when the table changes.
    doc = MOVES_DOC.read_text(encoding="utf-8")
    found = re.search(r"<!-- moves:start -->\n(.*?)<!-- moves:end -->", doc, re.S)
    assert found, "docs/exactly-once.md lacks the <!-- moves:start --> ... <!-- moves:end --> block"
    assert found.group(1) == moves_markdown(), (
        "docs/exactly-once.md's table of moves is out of date: paste the output of "
        "`python -c 'from digest.states import moves_markdown as m; print(m(), end=\"\")'`"
    )


class _ScriptedBackend(BaseBackend):
    """Answers batches from a script (accept, refuse for good, fail for now), then accepts."""

    def __init__(self, script: list[str]) -> None:
        self.script = list(script)

    def send_batch(self, batch: OutgoingBatch) -> BatchResult:
        answer = self.script.pop(0) if self.script else "accept"
        if answer == "refuse":  # the provider blames the batch's first recipient
            first = batch.recipients[0].delivery_id
            raise PermanentSendError("HTTP 400", refused={first: "not a valid address"})
        if answer == "refuse-all":  # the provider blames the request itself
            raise PermanentSendError("HTTP 400: the from address is not verified")
        if answer == "later":
            raise TransientSendError("HTTP 503: try later")
        return BatchResult(message_id="scripted", accepted=len(batch.recipients))


def _record_moves(engine: Engine) -> None:
    """A trigger that writes down every change of a delivery's state, whoever makes it."""
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE moves_seen (source TEXT, target TEXT)"))
        connection.execute(
            text(
                "CREATE TRIGGER record_moves AFTER UPDATE OF state ON delivery "
                "WHEN OLD.state <> NEW.state BEGIN "
                "INSERT INTO moves_seen VALUES (OLD.state, NEW.state); END"
            )
        )
        connection.execute(
            text(
                "CREATE TRIGGER record_plans AFTER INSERT ON delivery BEGIN "
                "INSERT INTO moves_seen VALUES ('(planning)', NEW.state); END"
            )
        )


def _lane(
    settings: Settings, engine: Engine, owner: str, digest_id: int, script: list[str]
) -> None:
    plan = sending.send_plan(engine, digest_id=digest_id, week=WEEK, owner=owner)
    sender = sending.Sender.from_settings(settings, engine=engine, backend=_ScriptedBackend(script))
    sending.send(sender, plan, stop=sending.RunStop())


def _event(engine: Engine, delivery_id: int, state: DeliveryState, n: int) -> None:
    event = NormalizedEvent(f"e{n}", state.value, delivery_id, state, None, None, None, {})
    with session_scope(engine) as session:
        apply_events(session=session, events=[event])


def test_every_move_the_code_makes_is_in_the_table(tmp_path: Path) -> None:
    # A week with every kind of trouble; a trigger records each state change the code makes.
    settings = get_settings().model_copy(update={"batch_size": 2})
    seed(settings, tmp_path, subscribers=9)
    engine = ensure_schema(settings.database_url)
    make_subscribers(engine, 1, categories=["Robotics"], start=500)  # nothing new for them
    _record_moves(engine)
    edition = preparation.Edition.from_settings(settings)
    prepared = preparation.prepare_digest(engine, edition, IsoWeek.parse(WEEK), freeze=True)
    assert prepared.digest_id is not None
    digest_id = prepared.digest_id
    preparation.plan(engine, edition, prepared)
    with engine.begin() as connection:
        connection.execute(
            update(Subscriber)
            .where(Subscriber.email == "reader7@example.com")
            .values(status="unsubscribed")
        )

    # A run that dies mid-batch, with an event arriving for one of its rows meanwhile.
    dead = "another-host:1:deadbeef"
    ledger.acquire_lease(engine, digest_id=digest_id, owner=dead, ttl_seconds=5)
    with engine.begin() as connection:
        pending = ledger.pending_by_variant(connection, digest_id=digest_id)
        variant = max(pending, key=lambda vid: pending[vid])  # two rows: one proven, one not
        orphan = ledger.claim_batch(
            connection, digest_id=digest_id, variant_id=variant, owner=dead, limit=2
        )
        connection.execute(
            update(DIGEST_TABLE).values(lease_expires_at=utcnow().replace(year=2000))
        )
    _event(engine, orphan.delivery_ids[0], S.DELIVERED, 1)

    # The rerun: finds them uncertain, resends on purpose, meets a refusal and an outage.
    owner = ledger.new_owner()
    bookkeeping.begin_run(
        engine, digest_id=digest_id, owner=owner, lease_seconds=60, resend_uncertain=True
    )
    bookkeeping.reconcile(engine, digest_id=digest_id)
    _lane(settings, engine, owner, digest_id, ["refuse", "later"])
    _lane(settings, engine, owner, digest_id, ["refuse-all"])
    _lane(settings, engine, owner, digest_id, [])
    counts, _ = bookkeeping.reconcile(engine, digest_id=digest_id)
    assert counts["failed"] == 1 and counts["suppressed"] == 1
    bookkeeping.end_run(engine, digest_id=digest_id, owner=owner)
    # After a fix, the refused row is sent on purpose.
    owner = ledger.new_owner()
    bookkeeping.begin_run(
        engine,
        digest_id=digest_id,
        owner=owner,
        lease_seconds=60,
        resend_uncertain=False,
        retry_failed=True,
    )
    _lane(settings, engine, owner, digest_id, [])
    with engine.connect() as connection:
        sent = (
            connection.execute(text("SELECT id FROM delivery WHERE state = 'sent' ORDER BY id"))
            .scalars()
            .all()
        )
    for n, (delivery_id, state) in enumerate(
        [(sent[0], S.BOUNCED), (sent[0], S.DELIVERED), (sent[1], S.OPENED)], start=2
    ):
        _event(engine, delivery_id, state, n)
    with engine.connect() as connection:
        seen = set(connection.execute(text("SELECT source, target FROM moves_seen")))
    planned = {target for source, target in seen if source == "(planning)"}
    seen -= {(source, target) for source, target in seen if source == "(planning)"}

    assert planned == {"pending", "skipped"} and planned <= {s.value for s in PLANNED}
    expected = {
        ("pending", "sending"),
        ("sending", "uncertain"),
        ("uncertain", "delivered"),
        ("uncertain", "pending"),
        ("sending", "failed"),
        ("sending", "pending"),
        ("sending", "sent"),
        ("pending", "suppressed"),
        ("failed", "pending"),
        ("sent", "bounced"),
        ("sent", "opened"),
    }
    assert expected <= seen  # the scenario exercised what it meant to
    for source, target in seen:
        assert is_allowed(S(source), S(target)), f"{source} -> {target} is not in MOVES"


def test_every_move_of_scheduled_sends_and_recall_is_in_the_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Held requests through the fake: a dead run's batch cancelled and resent, a recall, and a
    # cancel refused; a trigger records each state change, and each one is in MOVES.
    from tests.fakes.fake_sendgrid import FakeSendGrid
    from tests.support.scheduled import (
        die_with_a_batch_in_flight,
        prepare_week,
        recall_week,
        run_week,
    )

    seen: set[tuple[str, str]] = set()
    with FakeSendGrid(api_key="SG.states-key") as fake:
        for name in ("DIGEST_EMAIL_BACKEND", "SENDGRID_API_KEY", "DIGEST_SENDGRID_HOST"):
            value = {"DIGEST_EMAIL_BACKEND": "sendgrid", "DIGEST_SENDGRID_HOST": fake.url}
            monkeypatch.setenv(name, value.get(name, fake.api_key))
        for scenario in ("died-then-recalled", "cancel-refused"):
            folder = tmp_path / scenario
            folder.mkdir()
            monkeypatch.setenv("DIGEST_DATABASE_URL", f"sqlite:///{folder / 'digest.db'}")
            monkeypatch.setenv("DIGEST_BATCH_SIZE", "2")
            get_settings.cache_clear()
            settings = get_settings()
            digest_id = prepare_week(settings, folder)
            engine = ensure_schema(settings.database_url)
            _record_moves(engine)
            if scenario == "died-then-recalled":
                die_with_a_batch_in_flight(settings, digest_id)
                run_week(settings, digest_id)
                recall_week(settings)
            else:
                fake.set_cancel_deadline(1000)
                fake.lose_answers(1)
                run_week(settings, digest_id)
            with engine.connect() as connection:
                seen |= set(connection.execute(text("SELECT source, target FROM moves_seen")))
    seen = {(source, target) for source, target in seen if source != "(planning)"}
    assert {("sending", "pending"), ("sending", "uncertain"), ("sent", "pending")} <= seen
    for source, target in seen:
        assert is_allowed(S(source), S(target)), f"{source} -> {target} is not in MOVES"


def test_a_failed_runs_message_adds_up_and_calls_untried_rows_untried() -> None:
    # Pending rows the stopped run never reached have no reason of their own: they were not tried.
    summary = RunSummary(week="2026-W10", digest_id=1, subject=None)
    summary.counts = {"pending": 30, "sent": 5}
    summary.reasons = [("pending", "the provider's answer was lost", 10)]
    said = incomplete_message(summary)
    assert "30 still pending" in said
    assert "10: the provider's answer was lost; 20: not tried yet" in said
