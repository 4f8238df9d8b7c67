"""The delivery ledger's invariants, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from digest.config import Settings
from digest.db import get_engine, upgrade
from digest.delivery import ledger
from digest.errors import RecalledError, RunInProgressError
from digest.models import DIGEST_TABLE, Delivery, Subscriber
from digest.render.variant import RenderedVariant
from digest.weeks import utcnow
from tests.support.faults import fail_call
from tests.support.ledger_data import make_digest, make_subscribers, render_everything


@pytest.fixture
def engine(settings: Settings) -> Engine:
    return get_engine(settings.database_url)


def _states(engine: Engine, digest_id: int) -> dict[str, int]:
    with engine.connect() as connection:
        return ledger.state_counts(connection, digest_id=digest_id)


def test_planning_gives_each_active_subscriber_exactly_one_row(engine: Engine) -> None:
    # One delivery row per (digest, subscriber); suppressed subscribers are never planned.
    make_subscribers(engine, 25)
    make_subscribers(engine, 3, status="unsubscribed", start=100)
    make_subscribers(engine, 2, status="pending", start=200)
    digest_id = make_digest(engine)
    summary = ledger.plan_recipients(
        engine, digest_id=digest_id, render_variant=render_everything, chunk_ids=7
    )
    assert summary.planned == 25
    assert _states(engine, digest_id) == {"pending": 25}


def test_a_planning_that_fails_midway_gives_its_connection_back_as_it_found_it(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Planning writes with SQLite's bulk settings (no foreign keys, no fsync per chunk); a
    # failure halfway must not leave a pooled connection that way, and the rerun completes.
    from digest.delivery.ledger import planning

    make_subscribers(engine, 25)
    digest_id = make_digest(engine)
    real_insert_range = planning._insert_range
    fail_call(monkeypatch, planning, "_insert_range", call=2, error=RuntimeError("disk is full"))
    with pytest.raises(RuntimeError, match="disk is full"):
        ledger.plan_recipients(
            engine, digest_id=digest_id, render_variant=render_everything, chunk_ids=10
        )
    if engine.dialect.name == "sqlite":
        pooled = [engine.connect() for _ in range(engine.pool.checkedin())]
        for connection in pooled:
            pragma = connection.exec_driver_sql
            assert pragma("PRAGMA foreign_keys").scalar() == 1
            assert pragma("PRAGMA synchronous").scalar() == 2  # FULL
            assert pragma("PRAGMA temp_store").scalar() == 0  # DEFAULT
            assert pragma("PRAGMA wal_autocheckpoint").scalar() == 1000
            connection.close()
    monkeypatch.setattr(planning, "_insert_range", real_insert_range)
    summary = ledger.plan_recipients(
        engine, digest_id=digest_id, render_variant=render_everything, chunk_ids=10
    )
    assert _states(engine, digest_id) == {"pending": 25} and not summary.already_planned


def test_planning_checkpoints_the_wal_as_it_writes_not_at_the_end(sqlite_url: str) -> None:
    # SQLite's WAL only. Planning copies the WAL into the database beside the writer, chunk by
    # chunk, with SQLite's own checkpoints off meanwhile: what is left in the WAL afterwards is
    # about the last chunk's pages, not the whole plan's (which the send's commits would copy).
    upgrade(sqlite_url)
    engine = get_engine(sqlite_url)
    make_subscribers(engine, 3000)
    digest_id = make_digest(engine)
    ledger.plan_recipients(
        engine, digest_id=digest_id, render_variant=render_everything, chunk_ids=300
    )
    with engine.connect() as connection:
        _, wal_pages, _ = connection.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
        assert connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1000
    assert _states(engine, digest_id) == {"pending": 3000}
    # The plan wrote about 250 pages in ten chunks; without the checkpoints beside, all stay.
    assert wal_pages < 25, f"{wal_pages} pages still in the WAL after planning"


def test_a_finished_plan_is_frozen_and_late_joiners_are_not_added(engine: Engine) -> None:
    # The recipient list is frozen when planning completes: a rerun plans nobody new.
    make_subscribers(engine, 5)
    digest_id = make_digest(engine)
    ledger.plan_recipients(engine, digest_id=digest_id, render_variant=render_everything)
    make_subscribers(engine, 5, start=50)
    again = ledger.plan_recipients(engine, digest_id=digest_id, render_variant=render_everything)
    assert again.already_planned
    assert _states(engine, digest_id) == {"pending": 5}


def test_category_sets_render_once_and_empty_variants_are_skipped(engine: Engine) -> None:
    # Each distinct category set is one variant; a set with nothing to show is `skipped`.
    calls: list[list[str]] = []

    def renderer(categories: list[str]) -> RenderedVariant | None:
        calls.append(categories)
        return render_everything(categories)

    make_subscribers(engine, 4, categories=["Writing", "Data"])
    make_subscribers(engine, 3, categories=["data", " writing "], start=10)
    make_subscribers(engine, 2, categories=["Robotics"], start=20)
    make_subscribers(engine, 1, start=30)
    digest_id = make_digest(engine)
    summary = ledger.plan_recipients(engine, digest_id=digest_id, render_variant=renderer)
    assert sorted(calls) == [[], ["data", "writing"], ["robotics"]]
    assert (summary.planned, summary.skipped, summary.variants) == (8, 2, 2)
    assert _states(engine, digest_id) == {"pending": 8, "skipped": 2}


def test_claimed_batches_are_disjoint_and_only_the_claiming_batch_settles_them(
    engine: Engine,
) -> None:
    # A row is claimed once; an outcome recorded under another batch's claim changes nothing.
    make_subscribers(engine, 10)
    digest_id = make_digest(engine)
    ledger.plan_recipients(engine, digest_id=digest_id, render_variant=render_everything)
    with engine.begin() as connection:
        (variant_id,) = ledger.pending_by_variant(connection, digest_id=digest_id)
        first = ledger.claim_batch(
            connection, digest_id=digest_id, variant_id=variant_id, owner="a", limit=6
        )
        second = ledger.claim_batch(
            connection, digest_id=digest_id, variant_id=variant_id, owner="a", limit=6
        )
    assert len(first) == 6 and len(second) == 4
    assert first.claim != second.claim
    assert not set(first.delivery_ids) & set(second.delivery_ids)
    assert first.delivery_ids == sorted(first.delivery_ids)
    # The same rows under a claim id that is not theirs: nothing moves.
    forged = ledger.ClaimedBatch(
        digest_id=digest_id,
        variant_id=variant_id,
        claim="a#someone-else",
        recipients=first.recipients,
    )
    with engine.begin() as connection:
        assert ledger.mark_sent(connection, batch=forged, message_id="x") == 0
        assert ledger.mark_sent(connection, batch=first, message_id="m1") == 6
        assert ledger.mark_sent(connection, batch=first, message_id="again") == 0
        assert ledger.release_pending(connection, batch=second, reason="503") == 4
    assert _states(engine, digest_id) == {"sent": 6, "pending": 4}


def test_claim_skips_subscribers_who_left_after_planning(engine: Engine) -> None:
    # An unsubscribe takes effect before the next batch is claimed.
    make_subscribers(engine, 4)
    digest_id = make_digest(engine)
    ledger.plan_recipients(engine, digest_id=digest_id, render_variant=render_everything)
    with engine.begin() as connection:
        connection.execute(
            update(Subscriber)
            .where(Subscriber.email == "reader1@example.com")
            .values(status="unsubscribed")
        )
        (variant_id,) = ledger.pending_by_variant(connection, digest_id=digest_id)
        claimed = ledger.claim_batch(
            connection, digest_id=digest_id, variant_id=variant_id, owner="a", limit=10
        )
        assert "reader1@example.com" not in {r.email for r in claimed.recipients}
        assert ledger.suppress_unsendable(connection, digest_id=digest_id) == 1
    assert _states(engine, digest_id) == {"sending": 3, "suppressed": 1}


def test_a_live_lease_refuses_a_second_run(engine: Engine) -> None:
    # Two runs of the same week at once: the second is refused with a clear message.
    digest_id = make_digest(engine)
    ledger.acquire_lease(engine, digest_id=digest_id, owner=ledger.new_owner(), ttl_seconds=60)
    with pytest.raises(RunInProgressError, match="Another run is sending"):
        ledger.acquire_lease(engine, digest_id=digest_id, owner=ledger.new_owner(), ttl_seconds=60)


def test_a_leased_claim_takes_nothing_once_the_lease_is_lost_or_the_week_recalled(
    engine: Engine,
) -> None:
    # The sender's claims carry the lease in their own statement: a takeover or a recall
    # stops the very next claim, and check_lease says which.
    make_subscribers(engine, 6)
    digest_id = make_digest(engine)
    ledger.plan_recipients(engine, digest_id=digest_id, render_variant=render_everything)
    owner, other = ledger.new_owner(), ledger.new_owner()
    ledger.acquire_lease(engine, digest_id=digest_id, owner=owner, ttl_seconds=60)

    def claim(by: str) -> int:
        with engine.begin() as connection:
            (variant_id,) = ledger.pending_by_variant(connection, digest_id=digest_id)
            return len(
                ledger.claim_batch(
                    connection,
                    digest_id=digest_id,
                    variant_id=variant_id,
                    owner=by,
                    limit=2,
                    while_leased=True,
                )
            )

    assert claim(owner) == 2
    assert claim(other) == 0
    with engine.begin() as connection:
        ledger.check_lease(connection, digest_id=digest_id, owner=owner)
        with pytest.raises(RunInProgressError, match="lost the digest's lease"):
            ledger.check_lease(connection, digest_id=digest_id, owner=other)
        ledger.mark_recalled(connection, week="2026-W47", stopped=0, on_their_way=2)
    assert claim(owner) == 0
    with engine.begin() as connection, pytest.raises(RecalledError, match="recalled"):
        ledger.check_lease(connection, digest_id=digest_id, owner=owner)
    assert _states(engine, digest_id) == {"sending": 2, "pending": 4}


def test_rows_left_sending_by_a_dead_run_become_uncertain_not_pending(engine: Engine) -> None:
    # A rerun never resends what a dead run may have handed to the provider.
    make_subscribers(engine, 5)
    digest_id = make_digest(engine)
    ledger.plan_recipients(engine, digest_id=digest_id, render_variant=render_everything)
    dead_owner = "some-host:1:deadbeef"  # another host: only lease expiry frees it
    ledger.acquire_lease(engine, digest_id=digest_id, owner=dead_owner, ttl_seconds=5)
    with engine.begin() as connection:
        (variant_id,) = ledger.pending_by_variant(connection, digest_id=digest_id)
        ledger.claim_batch(
            connection, digest_id=digest_id, variant_id=variant_id, owner=dead_owner, limit=3
        )
        connection.execute(
            update(DIGEST_TABLE).values(lease_expires_at=utcnow().replace(year=2000))
        )
    found = ledger.acquire_lease(engine, digest_id=digest_id, owner="rerun", ttl_seconds=60)
    assert found == 3
    assert _states(engine, digest_id) == {"uncertain": 3, "pending": 2}
    with engine.begin() as connection:
        assert ledger.requeue_uncertain(connection, digest_id=digest_id) == 3
    assert _states(engine, digest_id) == {"pending": 5}


def test_a_lease_held_by_a_dead_local_process_is_taken_over_at_once(engine: Engine) -> None:
    # A killed run on this host does not block the rerun until its lease expires.
    import socket
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead_owner = f"{socket.gethostname()}:{child.pid}:cafe"
    digest_id = make_digest(engine)
    ledger.acquire_lease(engine, digest_id=digest_id, owner=dead_owner, ttl_seconds=600)
    ledger.acquire_lease(engine, digest_id=digest_id, owner="rerun", ttl_seconds=60)
    with engine.connect() as connection:
        assert connection.execute(select(DIGEST_TABLE.c.lease_owner)).scalar_one() == "rerun"


def test_planning_twice_concurrently_never_duplicates_rows(engine: Engine) -> None:
    # The unique (digest, subscriber) constraint holds even when two planners race.
    make_subscribers(engine, 300)
    digest_id = make_digest(engine)
    errors: list[BaseException] = []

    def plan() -> None:
        try:
            ledger.plan_recipients(
                engine, digest_id=digest_id, render_variant=render_everything, chunk_ids=50
            )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=plan) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    with engine.connect() as connection:
        rows = connection.execute(
            select(Delivery.subscriber_id).where(Delivery.digest_id == digest_id)
        ).all()  # type: ignore[arg-type]
    assert len(rows) == len(set(rows)) == 300


def test_four_senders_on_postgresql_never_claim_the_same_row(postgres_url: str) -> None:
    # SKIP LOCKED: concurrent claimers of one digest get disjoint batches that cover every row.
    from digest.db import upgrade

    upgrade(postgres_url)
    engine = get_engine(postgres_url)
    make_subscribers(engine, 2000)
    digest_id = make_digest(engine)
    ledger.plan_recipients(engine, digest_id=digest_id, render_variant=render_everything)
    with engine.connect() as connection:
        (variant_id,) = ledger.pending_by_variant(connection, digest_id=digest_id)
    claimed: list[list[int]] = [[] for _ in range(4)]
    barrier = threading.Barrier(4)

    def sender(index: int) -> None:
        barrier.wait()
        while True:
            with engine.begin() as connection:
                batch = ledger.claim_batch(
                    connection,
                    digest_id=digest_id,
                    variant_id=variant_id,
                    owner=f"s{index}",
                    limit=37,
                )
                if not batch:
                    return
                ids = batch.delivery_ids
                ledger.mark_sent(connection, batch=batch, message_id=f"m{index}")
            claimed[index].extend(ids)

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [i for batch in claimed for i in batch]
    assert len(everything) == len(set(everything)) == 2000
    assert sum(1 for batch in claimed if batch) >= 2
    assert _states(engine, digest_id) == {"sent": 2000}


def test_a_refused_lease_names_its_holder_even_without_an_expiry(engine: Engine) -> None:
    # The refusal is a sentence for people, whatever state the holder's row is in.
    digest_id = make_digest(engine)
    with engine.begin() as connection:
        connection.execute(update(DIGEST_TABLE).values(lease_owner="elsewhere:1:abc"))
    with pytest.raises(RunInProgressError, match=r"lease held by elsewhere:1:abc\)"):
        ledger.acquire_lease(engine, digest_id=digest_id, owner="me", ttl_seconds=60)
