"""The send path without Prefect, as the pipeline tests drive it: the sample week planned at a
batch size, a run begun as the flow begins it, and that run's plan."""

from __future__ import annotations

from pathlib import Path

from digest.config import Settings
from digest.db import get_engine
from digest.delivery import sending
from digest.delivery.ledger import new_owner
from digest.run import bookkeeping, preparation
from digest.weeks import IsoWeek
from tests.support.ledger_data import make_subscribers
from tests.support.scenario import WEEK, seed


def prepare_batched_week(
    settings: Settings, tmp_path: Path, *, batch_size: int, extra: int = 0
) -> tuple[Settings, int]:
    seed(settings, tmp_path)
    if extra:
        make_subscribers(get_engine(settings.database_url), extra, start=1000)
    settings = settings.model_copy(update={"batch_size": batch_size})
    engine = get_engine(settings.database_url)
    edition = preparation.Edition.from_settings(settings)
    prepared = preparation.prepare_digest(engine, edition, IsoWeek.parse(WEEK), freeze=True)
    assert prepared.digest_id is not None
    preparation.plan(engine, edition, prepared)
    return settings, prepared.digest_id


def begin_new_run(settings: Settings, digest_id: int, *, resend_uncertain: bool = False) -> str:
    """Start a run of the digest as the flow does; returns the run's owner."""
    owner = new_owner()
    begin_owned_run(settings, digest_id, owner, resend_uncertain=resend_uncertain)
    return owner


def begin_owned_run(
    settings: Settings,
    digest_id: int,
    owner: str,
    *,
    resend_uncertain: bool,
    retry_failed: bool = False,
) -> dict[str, int]:
    return bookkeeping.begin_run(
        get_engine(settings.database_url),
        digest_id=digest_id,
        owner=owner,
        lease_seconds=settings.lease_seconds,
        resend_uncertain=resend_uncertain,
        retry_failed=retry_failed,
    )


def send_plan_of(settings: Settings, digest_id: int, owner: str) -> sending.SendPlan:
    return sending.send_plan(
        get_engine(settings.database_url), digest_id=digest_id, week=WEEK, owner=owner
    )
