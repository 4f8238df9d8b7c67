"""The send's recorder: accepted requests marked `sent`, several to a transaction, and a failed
record that leaves only its own request's rows `sending` (SQLite and PostgreSQL)."""

from __future__ import annotations

import contextvars

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from digest.config import Settings
from digest.db import get_engine
from digest.delivery import ledger
from digest.delivery.recording import Accepted, Recorder
from digest.models import DELIVERY_TABLE as DELIVERY
from tests.support.faults import fail_call
from tests.support.ledger_data import make_digest, make_subscribers, render_everything


@pytest.fixture
def engine(settings: Settings) -> Engine:
    return get_engine(settings.database_url)


def _claims(engine: Engine, requests: int, size: int) -> tuple[int, list[ledger.ClaimedBatch]]:
    make_subscribers(engine, requests * size)
    digest_id = make_digest(engine)
    ledger.plan_recipients(engine, digest_id=digest_id, render_variant=render_everything)
    owner = ledger.new_owner()
    ledger.acquire_lease(engine, digest_id=digest_id, owner=owner, ttl_seconds=60)
    claims = []
    with engine.begin() as connection:
        (variant_id,) = ledger.pending_by_variant(connection, digest_id=digest_id)
        for _ in range(requests):
            claims.append(
                ledger.claim_batch(
                    connection, digest_id=digest_id, variant_id=variant_id, owner=owner, limit=size
                )
            )
    return digest_id, claims


def _counts(engine: Engine, digest_id: int) -> dict[str, int]:
    with engine.connect() as connection:
        return ledger.state_counts(connection, digest_id=digest_id)


def test_requests_waiting_together_are_marked_in_one_go_and_each_told(engine: Engine) -> None:
    digest_id, claims = _claims(engine, requests=3, size=4)
    told: list[int] = []
    recorder = Recorder(engine)
    for claimed in claims:  # queued before the recorder starts: one transaction for all three
        recorder.accepted(Accepted(claimed, "msg", told.append))
    with recorder:
        recorder.flush()
    assert told == [4, 4, 4]
    assert _counts(engine, digest_id) == {"sent": 12}


def test_a_failed_record_leaves_only_its_own_request_sending(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest_id, claims = _claims(engine, requests=3, size=4)
    lost = RuntimeError("the database connection was lost")
    fail_call(monkeypatch, ledger, "mark_sent", call=2, error=lost)
    told: list[int] = []
    recorder = Recorder(engine)
    for claimed in claims:
        recorder.accepted(Accepted(claimed, "msg", told.append))
    with recorder, pytest.raises(RuntimeError, match="connection was lost"):
        recorder.flush()
    assert sorted(told) == [4, 4]
    assert _counts(engine, digest_id) == {"sent": 8, "sending": 4}
    with engine.connect() as connection:  # the second request's own rows, and no others
        stuck = connection.execute(
            select(DELIVERY.c.id).where(DELIVERY.c.state == "sending").order_by(DELIVERY.c.id)
        )
        assert list(stuck.scalars()) == claims[1].delivery_ids


RUN = contextvars.ContextVar("RUN", default="none")


def test_each_request_is_told_in_the_context_the_recorder_was_made_in(engine: Engine) -> None:
    # `then` reports to the run's logger, which finds the run (and Prefect its API) in the
    # context; a bare thread has none, and Prefect would start a server of its own to log.
    digest_id, claims = _claims(engine, requests=2, size=3)
    seen: list[str] = []

    def make_and_record() -> None:
        RUN.set("the run's")
        with Recorder(engine) as recorder:
            for claimed in claims:
                recorder.accepted(Accepted(claimed, "msg", lambda _sent: seen.append(RUN.get())))
            recorder.flush()

    contextvars.copy_context().run(make_and_record)
    assert seen == ["the run's", "the run's"]
    assert _counts(engine, digest_id) == {"sent": 6}
