"""A week's digest row and its frozen content: stored once, then read by every rerun."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.engine import Connection

from digest.db import insert_ignore
from digest.errors import NotFoundError, RefreezeRefusedError
from digest.models import DELIVERY_TABLE as DELIVERY
from digest.models import DIGEST_TABLE as DIGEST
from digest.models import EVENT_TABLE as EVENT
from digest.models import VARIANT_TABLE as VARIANT
from digest.states import MAY_HAVE_REACHED, NEVER_SENT, values
from digest.weeks import utcnow


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
    connection.execute(
        insert_ignore(connection, DIGEST).values(
            week=week, subject=subject, content=content, created_at=utcnow()
        )
    )
    digest = find_digest(connection, week)
    assert digest is not None
    return digest


def previous_matchups(connection: Connection, *, before_week: str) -> frozenset[frozenset[str]]:
    """Slug pairs of every head-to-head in digests that may have reached someone before the week."""
    was_sent = (
        select(DELIVERY.c.id)
        .where(DELIVERY.c.digest_id == DIGEST.c.id, DELIVERY.c.state.in_(values(MAY_HAVE_REACHED)))
        .exists()
    )
    rows = connection.execute(select(DIGEST.c.content).where(DIGEST.c.week < before_week, was_sent))
    matchups: set[frozenset[str]] = set()
    for (content,) in rows:
        for pair in content.get("pairs", []):
            matchups.add(frozenset({pair["a"]["slug"], pair["b"]["slug"]}))
    return frozenset(matchups)


def is_planned(connection: Connection, *, digest_id: int) -> bool:
    """Whether planning wrote every recipient's row (the list is then fixed)."""
    planned_at = connection.execute(
        select(DIGEST.c.planned_at).where(DIGEST.c.id == digest_id)
    ).scalar_one()
    return planned_at is not None


def mark_completed(connection: Connection, *, digest_id: int) -> None:
    connection.execute(update(DIGEST).where(DIGEST.c.id == digest_id).values(completed_at=utcnow()))


def variant_row(connection: Connection, *, variant_id: int) -> dict[str, Any]:
    row = connection.execute(select(VARIANT).where(VARIANT.c.id == variant_id)).mappings().first()
    if row is None:
        raise NotFoundError(f"Variant {variant_id} does not exist.")
    return dict(row)


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


def variant_bodies(connection: Connection, *, digest_id: int) -> list[tuple[str, str, str]]:
    """(key, html, text) of every variant planning stored for the digest."""
    rows = connection.execute(
        select(VARIANT.c.key, VARIANT.c.html, VARIANT.c.text).where(
            VARIANT.c.digest_id == digest_id
        )
    )
    return [(key, html, text) for key, html, text in rows]


def discard_unsent(connection: Connection, *, week: str) -> bool:
    """Delete the week's frozen digest, its variants and its rows, so it can be composed anew.

    Refused (RefreezeRefusedError) once any row may have reached a subscriber, or while a run
    holds the lease; False when the week has no digest yet.
    """
    digest = find_digest(connection, week)
    if digest is None:
        return False
    reached = connection.execute(
        select(DELIVERY.c.state, DELIVERY.c.id)
        .where(DELIVERY.c.digest_id == digest["id"], DELIVERY.c.state.not_in(values(NEVER_SENT)))
        .limit(1)
    ).first()
    if reached is not None:
        raise RefreezeRefusedError(
            f"The digest of {week} cannot be recomposed: some deliveries are already "
            f"`{reached.state}`, so subscribers may hold it. Fix the catalog for next week, or "
            "send what is frozen."
        )
    taken = connection.execute(
        update(DIGEST)
        .where(
            DIGEST.c.id == digest["id"],
            or_(DIGEST.c.lease_owner.is_(None), DIGEST.c.lease_expires_at < utcnow()),
        )
        .values(lease_owner="refreeze", lease_expires_at=utcnow())
    ).rowcount
    if not taken:
        raise RefreezeRefusedError(
            f"A run is sending the digest of {week} right now; wait for it to end, then "
            "run again with --refreeze."
        )
    rows = select(DELIVERY.c.id).where(DELIVERY.c.digest_id == digest["id"])
    # Events stay on record (the raw payload keeps the id), detached from the rows removed.
    connection.execute(
        update(EVENT)
        .where(EVENT.c.delivery_id.in_(rows.scalar_subquery()))
        .values(delivery_id=None)
    )
    connection.execute(delete(DELIVERY).where(DELIVERY.c.digest_id == digest["id"]))
    connection.execute(delete(VARIANT).where(VARIANT.c.digest_id == digest["id"]))
    connection.execute(delete(DIGEST).where(DIGEST.c.id == digest["id"]))
    return True
