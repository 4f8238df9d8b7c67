"""Held sends through the fake SendGrid, as the scheduled-send and recall tests drive them: the
sample week prepared and planned, runs as the flow makes them, a run that dies with a batch in
flight, and a recall."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select, update

from digest.config import Settings, get_settings
from digest.db import ensure_schema, get_engine
from digest.delivery import ledger, sending
from digest.delivery.building import recipient_for
from digest.delivery.cancelling import Canceller, canceller_for
from digest.models import DIGEST_TABLE as DIGEST
from digest.models import Delivery
from digest.run import bookkeeping, preparation
from digest.run.recall import RecallResult, recall
from digest.send import get_backend
from digest.send.base import OutgoingBatch, ProviderBatch
from digest.states import DeliveryState
from digest.weeks import IsoWeek, utcnow
from tests.fakes.fake_sendgrid import FakeSendGrid
from tests.support import list_shape
from tests.support.ledger_data import make_subscribers
from tests.support.scenario import WEEK, seed
from tests.support.senders import sender_for

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


def settings_with(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    return get_settings()


def prepare_week(settings: Settings, tmp_path: Path, *, extra: int = 0, shape: int = 0) -> int:
    """The sample week (6 subscribers, 2 variants, `extra` more), or with `shape` a real
    list's shape (64 variants); planned and frozen."""
    engine = ensure_schema(settings.database_url)
    if shape:
        list_shape.seed_list(engine, tmp_path, shape)
    else:
        seed(settings, tmp_path)
    if extra:
        make_subscribers(engine, extra, start=1000)
    edition = preparation.Edition.from_settings(settings)
    prepared = preparation.prepare_digest(engine, edition, IsoWeek.parse(WEEK), freeze=True)
    assert prepared.digest_id is not None
    preparation.plan(engine, edition, prepared)
    return prepared.digest_id


def run_week(
    settings: Settings, digest_id: int, **sender_changes: object
) -> tuple[dict[str, int], sending.SendReport]:
    """One run as the flow makes it: begin (recovering a dead run's batches), send, end."""
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
        plan = sending.send_plan(engine, digest_id=digest_id, week=WEEK, owner=owner)
        sender = replace(sender_for(settings, backend), **sender_changes)  # type: ignore[arg-type]
        report = sending.send(sender, plan, stop=sending.RunStop())
    bookkeeping.end_run(engine, digest_id=digest_id, owner=owner)
    return started, report


def planned_emails(settings: Settings, digest_id: int) -> set[str]:
    with get_engine(settings.database_url).connect() as connection:
        return set(
            connection.execute(
                select(Delivery.email).where(  # type: ignore[arg-type]
                    Delivery.digest_id == digest_id,
                    Delivery.state != DeliveryState.SKIPPED.value,
                )
            ).scalars()
        )


def die_with_a_batch_in_flight(settings: Settings, digest_id: int, *, recorded: int = 0) -> int:
    """A run sends `recorded` + 1 requests under one provider batch, records the answers of the
    first `recorded`, and dies before recording the last (its lease then lapses). Returns the
    rows it left `sending`."""
    engine = get_engine(settings.database_url)
    dead = "another-host:1:deadbeef"
    ledger.acquire_lease(engine, digest_id=digest_id, owner=dead, ttl_seconds=5)
    with get_backend(settings) as backend:
        sender = sender_for(settings, backend)
        assert isinstance(sender.canceller, Canceller)
        held = sender.canceller.open_batch(digest_id=digest_id, lead_seconds=sender.lead_seconds)
        assert isinstance(held, ProviderBatch)
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
            recipients=[recipient_for(sender.links, c) for c in claimed.recipients],
            from_email=sender.from_email,
            from_name=sender.from_name,
            provider_batch=held,
        )
    )
    return claimed


def recall_week(settings: Settings, *, wait_seconds: float = 60.0) -> RecallResult:
    engine = get_engine(settings.database_url)
    with get_backend(settings) as backend:
        return recall(
            engine,
            week=WEEK,
            canceller=canceller_for(settings, engine=engine, backend=backend),
            lease_seconds=settings.lease_seconds,
            wait_seconds=wait_seconds,
        )
