"""What the ledger says of a digest: counts by state, a run's own sends, the reasons rows wait."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from digest.delivery.ledger.digests import find_digest
from digest.models import DELIVERY_TABLE as DELIVERY
from digest.states import NEEDS_ATTENTION, values


def state_counts(connection: Connection, *, digest_id: int) -> dict[str, int]:
    rows = connection.execute(
        select(DELIVERY.c.state, func.count())
        .where(DELIVERY.c.digest_id == digest_id)
        .group_by(DELIVERY.c.state)
    )
    return {state: int(n) for state, n in rows}


def digest_status(connection: Connection, *, week: str) -> tuple[int, dict[str, int]]:
    digest = find_digest(connection, week)
    if digest is None:
        return 0, {}
    counts = state_counts(connection, digest_id=digest["id"])
    return sum(counts.values()), counts


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
    connection: Connection, *, digest_id: int, limit: int = 50
) -> list[tuple[str, str, int]]:
    """The reasons rows need attention, commonest first: (state, reason, count)."""
    rows = connection.execute(
        select(DELIVERY.c.state, DELIVERY.c.last_error, func.count())
        .where(
            DELIVERY.c.digest_id == digest_id,
            DELIVERY.c.state.in_(values(NEEDS_ATTENTION)),
            DELIVERY.c.last_error.is_not(None),
        )
        .group_by(DELIVERY.c.state, DELIVERY.c.last_error)
        .order_by(func.count().desc(), DELIVERY.c.state, DELIVERY.c.last_error)
        .limit(limit)
    )
    return [(s, r, int(n)) for s, r, n in rows]
