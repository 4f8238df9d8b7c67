"""The delivery ledger: freezing a digest, planning its recipients, claiming and settling batches.

Invariants this module keeps (each has a test named for it):
- one delivery row per (digest, subscriber); the recipient list is fixed once planning completes;
- a row leaves `pending` only when a batch claims it, and becomes `sent` only after the provider
  accepted its batch: nothing durable runs ahead of a confirmed send;
- one run at a time holds a digest's lease; rows left in `sending` by a run that is gone become
  `uncertain`, never `pending`, so a rerun cannot mail them twice;
- statements are set-based: one per batch, never one ORM object per recipient.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NamedTuple

from sqlalchemy import Table, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from digest.delivery.states import DeliveryState, SubscriberStatus
from digest.errors import NotFoundError, RunInProgressError
from digest.models import Delivery, Digest, DigestVariant, Subscriber
from digest.weeks import utcnow

DELIVERY: Table = Delivery.__table__  # type: ignore[attr-defined]
DIGEST: Table = Digest.__table__  # type: ignore[attr-defined]
VARIANT: Table = DigestVariant.__table__  # type: ignore[attr-defined]
SUBSCRIBER: Table = Subscriber.__table__  # type: ignore[attr-defined]

PAGE_SIZE = 1000


now_utc = utcnow


def new_owner() -> str:
    """A lease owner id: host and pid let a rerun on the same host see that a holder died."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def _owner_is_dead(owner: str) -> bool:
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _insert_ignore(connection: Connection, table: Table) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING for the connection's dialect."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


# --- the digest and its frozen content ---------------------------------------------------------


def find_digest(connection: Connection, week: str) -> dict[str, Any] | None:
    row = connection.execute(select(DIGEST).where(DIGEST.c.week == week)).mappings().first()
    return dict(row) if row else None


def freeze_digest(
    connection: Connection, *, week: str, subject: str, content: dict[str, Any]
) -> dict[str, Any]:
    """The week's digest row, created with this content unless one already exists.

    The first writer wins: a digest's content never changes once stored, so every rerun sends
    what the first run sent.
    """
    now = now_utc()
    connection.execute(
        _insert_ignore(connection, DIGEST).values(
            week=week, subject=subject, content=content, created_at=now
        )
    )
    digest = find_digest(connection, week)
    assert digest is not None
    return digest


def previous_matchups(connection: Connection, *, before_week: str) -> frozenset[frozenset[str]]:
    """Slug pairs of every head-to-head in digests sent before `before_week`."""
    sent_states = [
        s.value
        for s in DeliveryState
        if s
        not in {
            DeliveryState.PENDING,
            DeliveryState.SKIPPED,
            DeliveryState.SUPPRESSED,
            DeliveryState.FAILED,
        }
    ]
    was_sent = (
        select(DELIVERY.c.id)
        .where(DELIVERY.c.digest_id == DIGEST.c.id, DELIVERY.c.state.in_(sent_states))
        .exists()
    )
    rows = connection.execute(select(DIGEST.c.content).where(DIGEST.c.week < before_week, was_sent))
    matchups: set[frozenset[str]] = set()
    for (content,) in rows:
        for pair in content.get("pairs", []):
            matchups.add(frozenset({pair["a"]["slug"], pair["b"]["slug"]}))
    return frozenset(matchups)


# --- the lease: one run per digest at a time ---------------------------------------------------


def acquire_lease(engine: Engine, *, digest_id: int, owner: str, ttl_seconds: int) -> int:
    """Take the digest's lease for `owner`; returns how many rows were found `uncertain`.

    Raises RunInProgressError while another live run holds it. On taking the lease, every row
    still `sending` belongs to a run that is gone: it becomes `uncertain`.
    """
    now = now_utc()
    expires = now + timedelta(seconds=ttl_seconds)
    with engine.begin() as connection:
        holder = connection.execute(
            select(DIGEST.c.lease_owner, DIGEST.c.lease_expires_at, DIGEST.c.week).where(
                DIGEST.c.id == digest_id
            )
        ).one()
        free = or_(
            DIGEST.c.lease_owner.is_(None),
            DIGEST.c.lease_owner == owner,
            DIGEST.c.lease_expires_at < now,
        )
        if holder.lease_owner and _owner_is_dead(holder.lease_owner):
            free = or_(free, DIGEST.c.lease_owner == holder.lease_owner)
        taken = connection.execute(
            update(DIGEST)
            .where(DIGEST.c.id == digest_id, free)
            .values(lease_owner=owner, lease_expires_at=expires)
        ).rowcount
        if not taken:
            # Read the holder again: the first read may predate the run that just won the race.
            holder = connection.execute(
                select(DIGEST.c.lease_owner, DIGEST.c.lease_expires_at, DIGEST.c.week).where(
                    DIGEST.c.id == digest_id
                )
            ).one()
            until = (
                f" until {holder.lease_expires_at:%Y-%m-%d %H:%M:%S} UTC"
                if holder.lease_expires_at
                else ""
            )
            raise RunInProgressError(
                f"Another run is sending the digest of {holder.week} (lease held by "
                f"{holder.lease_owner or 'another run'}{until}). "
                "Wait for it to finish and run again; nothing was sent by this run."
            )
        return connection.execute(
            update(DELIVERY)
            .where(
                DELIVERY.c.digest_id == digest_id,
                DELIVERY.c.state == DeliveryState.SENDING.value,
                # Claims read "<owner>#<batch>": any claim not this run's is from a run now gone.
                or_(
                    DELIVERY.c.claim_owner.is_(None),
                    ~DELIVERY.c.claim_owner.startswith(owner + "#", autoescape=True),
                ),
            )
            .values(
                state=DeliveryState.UNCERTAIN.value,
                last_error="its sending run ended before the provider's answer was recorded",
                updated_at=now,
            )
        ).rowcount


def renew_lease(connection: Connection, *, digest_id: int, owner: str, ttl_seconds: int) -> None:
    """Extend the lease; RunInProgressError if another run took it meanwhile."""
    renewed = connection.execute(
        update(DIGEST)
        .where(DIGEST.c.id == digest_id, DIGEST.c.lease_owner == owner)
        .values(lease_expires_at=now_utc() + timedelta(seconds=ttl_seconds))
    ).rowcount
    if not renewed:
        raise RunInProgressError(
            "This run lost the digest's lease to another run (it was paused longer than "
            "DIGEST_LEASE_SECONDS). It stopped sending; the other run carries on."
        )


def release_lease(engine: Engine, *, digest_id: int, owner: str) -> None:
    with engine.begin() as connection:
        connection.execute(
            update(DIGEST)
            .where(DIGEST.c.id == digest_id, DIGEST.c.lease_owner == owner)
            .values(lease_owner=None, lease_expires_at=None)
        )


# --- planning: who gets which variant ------------------------------------------------------------


def variant_key(categories: Sequence[str]) -> str:
    """The variant a subscriber's categories select; '' is every category."""
    return ";".join(sorted({" ".join(c.split()).casefold() for c in categories if c.strip()}))


@dataclass(frozen=True)
class RenderedBodies:
    """A variant's rendered parts, or None when it has nothing to show (subscriber skipped)."""

    subject: str
    html: str
    text: str


VariantRenderer = Callable[[list[str]], RenderedBodies | None]


@dataclass(frozen=True)
class PlanSummary:
    planned: int
    skipped: int
    variants: int
    already_planned: bool


def plan_recipients(
    engine: Engine, *, digest_id: int, render_variant: VariantRenderer, page_size: int = PAGE_SIZE
) -> PlanSummary:
    """Give every active subscriber a delivery row, once; later calls add nobody.

    Subscribers are read in keyset pages; each distinct category set is rendered once. A crash
    mid-way is resumed by the next call (ON CONFLICT DO NOTHING), and `planned_at` is set only
    when every page is written, which freezes the list.
    """
    with engine.begin() as connection:
        planned_at = connection.execute(
            select(DIGEST.c.planned_at).where(DIGEST.c.id == digest_id)
        ).scalar_one()
    if planned_at is not None:
        return PlanSummary(planned=0, skipped=0, variants=0, already_planned=True)

    variant_ids: dict[str, int | None] = {}
    with engine.begin() as connection:
        for key, vid in connection.execute(
            select(VARIANT.c.key, VARIANT.c.id).where(VARIANT.c.digest_id == digest_id)
        ):
            variant_ids[key] = vid

    planned = skipped = 0
    for page in active_subscriber_pages(engine, page_size=page_size):
        with engine.begin() as connection:
            now = now_utc()
            rows = []
            for person in page:
                key = variant_key(person.categories or [])
                if key not in variant_ids:
                    variant_ids[key] = _store_variant(
                        connection, digest_id, key, render_variant(key.split(";") if key else [])
                    )
                vid = variant_ids[key]
                state = DeliveryState.PENDING if vid is not None else DeliveryState.SKIPPED
                rows.append(
                    {
                        "digest_id": digest_id,
                        "subscriber_id": person.id,
                        "variant_id": vid,
                        "email": person.email,
                        "name": person.name,
                        "state": state.value,
                        "attempts": 0,
                        "updated_at": now,
                    }
                )
            inserted = _insert_rows(connection, rows)
            planned += sum(1 for s in inserted if s == DeliveryState.PENDING.value)
            skipped += sum(1 for s in inserted if s == DeliveryState.SKIPPED.value)
    with engine.begin() as connection:
        connection.execute(
            update(DIGEST).where(DIGEST.c.id == digest_id).values(planned_at=now_utc())
        )
    return PlanSummary(
        planned=planned,
        skipped=skipped,
        variants=sum(1 for v in variant_ids.values() if v is not None),
        already_planned=False,
    )


def active_subscriber_pages(engine: Engine, *, page_size: int) -> Iterator[Sequence[Any]]:
    """Active subscribers (id, categories, email, name) in id order, one keyset page at a time.

    Never OFFSET and never the whole list in memory; each page is read in a short connection.
    """
    last_id = 0
    while True:
        with engine.connect() as connection:
            page = connection.execute(
                select(
                    SUBSCRIBER.c.id, SUBSCRIBER.c.categories, SUBSCRIBER.c.email, SUBSCRIBER.c.name
                )
                .where(
                    SUBSCRIBER.c.id > last_id, SUBSCRIBER.c.status == SubscriberStatus.ACTIVE.value
                )
                .order_by(SUBSCRIBER.c.id)
                .limit(page_size)
            ).all()
        if not page:
            return
        yield page
        last_id = page[-1].id


def _insert_rows(connection: Connection, rows: list[dict[str, Any]]) -> list[str]:
    """INSERT ... ON CONFLICT DO NOTHING ... RETURNING for the page; the states inserted.

    Passed as parameter sets, SQLAlchemy sends it as multi-row statements ("insertmanyvalues")
    with one cached compilation, instead of compiling a new 1,000-row VALUES clause per page.
    """
    statement = _insert_ignore(connection, DELIVERY).returning(DELIVERY.c.state)
    return list(connection.execute(statement, rows).scalars().all())


def _store_variant(
    connection: Connection, digest_id: int, key: str, bodies: RenderedBodies | None
) -> int | None:
    if bodies is None:
        return None
    connection.execute(
        _insert_ignore(connection, VARIANT).values(
            digest_id=digest_id,
            key=key,
            subject=bodies.subject,
            html=bodies.html,
            text=bodies.text,
        )
    )
    return int(
        connection.execute(
            select(VARIANT.c.id).where(VARIANT.c.digest_id == digest_id, VARIANT.c.key == key)
        ).scalar_one()
    )


# --- sending: claim, then settle ----------------------------------------------------------------


class ClaimedRecipient(NamedTuple):
    """One claimed row: who it goes to."""

    delivery_id: int
    subscriber_id: int
    email: str
    name: str | None


def pending_by_variant(connection: Connection, *, digest_id: int) -> dict[int, int]:
    """How many rows wait to be sent, per variant id."""
    rows = connection.execute(
        select(DELIVERY.c.variant_id, func.count())
        .where(DELIVERY.c.digest_id == digest_id, DELIVERY.c.state == DeliveryState.PENDING.value)
        .group_by(DELIVERY.c.variant_id)
    )
    return {int(vid): int(n) for vid, n in rows if vid is not None}


@dataclass(frozen=True)
class ClaimedBatch:
    """Rows one batch moved to `sending`, under a claim id of its own."""

    digest_id: int
    # Written to each row's claim_owner: "<run owner>#<batch>"; settling matches on it alone.
    claim: str
    recipients: list[ClaimedRecipient]

    def __len__(self) -> int:
        return len(self.recipients)

    @property
    def delivery_ids(self) -> list[int]:
        return [r.delivery_id for r in self.recipients]


def claim_batch(
    connection: Connection, *, digest_id: int, variant_id: int, owner: str, limit: int
) -> ClaimedBatch:
    """Move up to `limit` pending rows of one variant to `sending` for `owner`, in one statement.

    Only rows of currently active subscribers are claimed, so an unsubscribe takes effect before
    the next batch. On PostgreSQL, SKIP LOCKED lets several senders claim disjoint batches.
    """
    claim = f"{owner}#{uuid.uuid4().hex[:12]}"
    candidates = (
        select(DELIVERY.c.id)
        .join(SUBSCRIBER, SUBSCRIBER.c.id == DELIVERY.c.subscriber_id)
        .where(
            DELIVERY.c.digest_id == digest_id,
            DELIVERY.c.variant_id == variant_id,
            DELIVERY.c.state == DeliveryState.PENDING.value,
            SUBSCRIBER.c.status == SubscriberStatus.ACTIVE.value,
        )
        .order_by(DELIVERY.c.id)
        .limit(limit)
    )
    if connection.dialect.name == "postgresql":
        candidates = candidates.with_for_update(of=DELIVERY, skip_locked=True)
    now = now_utc()
    claimed = connection.execute(
        update(DELIVERY)
        .where(
            DELIVERY.c.id.in_(candidates.scalar_subquery()),
            DELIVERY.c.state == DeliveryState.PENDING.value,
        )
        .values(
            state=DeliveryState.SENDING.value,
            claim_owner=claim,
            claimed_at=now,
            attempts=DELIVERY.c.attempts + 1,
            updated_at=now,
        )
        .returning(DELIVERY.c.id, DELIVERY.c.subscriber_id, DELIVERY.c.email, DELIVERY.c.name)
    ).all()
    recipients = [
        ClaimedRecipient(delivery_id=did, subscriber_id=sid, email=email, name=name)
        for did, sid, email, name in claimed
    ]
    recipients.sort(key=lambda r: r.delivery_id)
    return ClaimedBatch(digest_id=digest_id, claim=claim, recipients=recipients)


def _settle(connection: Connection, batch: ClaimedBatch, values: dict[str, Any]) -> int:
    """Record an outcome for the batch's rows that are still its own and still `sending`."""
    return connection.execute(
        update(DELIVERY)
        .where(
            DELIVERY.c.digest_id == batch.digest_id,
            DELIVERY.c.state == DeliveryState.SENDING.value,
            DELIVERY.c.claim_owner == batch.claim,
        )
        .values(updated_at=now_utc(), **values)
    ).rowcount


def mark_sent(connection: Connection, *, batch: ClaimedBatch, message_id: str | None) -> int:
    return _settle(
        connection,
        batch,
        {
            "state": DeliveryState.SENT.value,
            "sent_at": now_utc(),
            "provider_message_id": message_id,
            "last_error": None,
        },
    )


def mark_failed(connection: Connection, *, batch: ClaimedBatch, reason: str) -> int:
    return _settle(
        connection, batch, {"state": DeliveryState.FAILED.value, "last_error": reason[:2000]}
    )


def release_pending(connection: Connection, *, batch: ClaimedBatch, reason: str) -> int:
    """Hand rows back after a transient error; the attempt count stays raised."""
    return _settle(
        connection,
        batch,
        {"state": DeliveryState.PENDING.value, "claim_owner": None, "last_error": reason[:2000]},
    )


def suppress_unsendable(connection: Connection, *, digest_id: int) -> int:
    """Pending rows whose subscriber left after planning are settled as `suppressed`."""
    gone = select(SUBSCRIBER.c.id).where(SUBSCRIBER.c.status != SubscriberStatus.ACTIVE.value)
    return connection.execute(
        update(DELIVERY)
        .where(
            DELIVERY.c.digest_id == digest_id,
            DELIVERY.c.state == DeliveryState.PENDING.value,
            DELIVERY.c.subscriber_id.in_(gone.scalar_subquery()),
        )
        .values(state=DeliveryState.SUPPRESSED.value, updated_at=now_utc())
    ).rowcount


def requeue_uncertain(connection: Connection, *, digest_id: int) -> int:
    """`--resend-uncertain`: put uncertain rows back to `pending`, on purpose."""
    return connection.execute(
        update(DELIVERY)
        .where(DELIVERY.c.digest_id == digest_id, DELIVERY.c.state == DeliveryState.UNCERTAIN.value)
        .values(state=DeliveryState.PENDING.value, claim_owner=None, updated_at=now_utc())
    ).rowcount


def state_counts(connection: Connection, *, digest_id: int) -> dict[str, int]:
    rows = connection.execute(
        select(DELIVERY.c.state, func.count())
        .where(DELIVERY.c.digest_id == digest_id)
        .group_by(DELIVERY.c.state)
    )
    return {state: int(n) for state, n in rows}


def sent_by_run(connection: Connection, *, digest_id: int, owner: str) -> tuple[int, int]:
    """Rows the provider accepted from this run's batches, and how many batches carried them.

    Counted from the ledger, not from task results, so a retried or restarted sender task
    cannot make the run's own account wrong.
    """
    rows, batches = connection.execute(
        select(func.count(), func.count(DELIVERY.c.claim_owner.distinct())).where(
            DELIVERY.c.digest_id == digest_id,
            DELIVERY.c.sent_at.is_not(None),
            DELIVERY.c.claim_owner.startswith(owner + "#", autoescape=True),
        )
    ).one()
    return int(rows), int(batches)


def failure_reasons(
    connection: Connection, *, digest_id: int, limit: int = 5
) -> list[tuple[str, str, int]]:
    """The commonest reasons rows are failed or pending: (state, reason, count)."""
    rows = connection.execute(
        select(DELIVERY.c.state, DELIVERY.c.last_error, func.count())
        .where(
            DELIVERY.c.digest_id == digest_id,
            DELIVERY.c.state.in_(
                [
                    DeliveryState.FAILED.value,
                    DeliveryState.PENDING.value,
                    DeliveryState.UNCERTAIN.value,
                ]
            ),
            DELIVERY.c.last_error.is_not(None),
        )
        .group_by(DELIVERY.c.state, DELIVERY.c.last_error)
        .order_by(func.count().desc())
        .limit(limit)
    )
    return [(s, r, int(n)) for s, r, n in rows]


def mark_completed(connection: Connection, *, digest_id: int) -> None:
    connection.execute(
        update(DIGEST).where(DIGEST.c.id == digest_id).values(completed_at=now_utc())
    )


def variant_row(connection: Connection, *, variant_id: int) -> dict[str, Any]:
    row = connection.execute(select(VARIANT).where(VARIANT.c.id == variant_id)).mappings().first()
    if row is None:
        raise NotFoundError(f"Variant {variant_id} does not exist.")
    return dict(row)


def digest_status(connection: Connection, *, week: str) -> tuple[int, dict[str, int]]:
    digest = find_digest(connection, week)
    if digest is None:
        return 0, {}
    counts = state_counts(connection, digest_id=digest["id"])
    return sum(counts.values()), counts


def stored_variant(connection: Connection, *, digest_id: int, key: str) -> dict[str, Any] | None:
    """The frozen bodies of one variant, if planning rendered it."""
    row = (
        connection.execute(
            select(VARIANT.c.subject, VARIANT.c.html, VARIANT.c.text).where(
                VARIANT.c.digest_id == digest_id, VARIANT.c.key == key
            )
        )
        .mappings()
        .first()
    )
    return dict(row) if row else None
