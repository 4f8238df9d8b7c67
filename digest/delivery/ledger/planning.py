"""Planning: one delivery row per active subscriber, each pointing at its rendered variant.

Subscribers are read in keyset pages (never OFFSET, never the whole list in memory); each
distinct category set is rendered once. Planning resumes where a crash left it and ends by
setting `planned_at`, which fixes the recipient list.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection, Engine

from digest.catalog.records import category_key
from digest.db import insert_ignore
from digest.delivery.ledger.digests import is_planned
from digest.models import DELIVERY_TABLE as DELIVERY
from digest.models import DIGEST_TABLE as DIGEST
from digest.models import SUBSCRIBER_TABLE as SUBSCRIBER
from digest.models import VARIANT_TABLE as VARIANT
from digest.states import DeliveryState, SubscriberStatus
from digest.weeks import utcnow

PAGE_SIZE = 1000


def variant_key(categories: Sequence[str]) -> str:
    """The variant a subscriber's categories select; '' is every category."""
    return ";".join(sorted({category_key(c) for c in categories if c.strip()}))


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

    A crash mid-way is resumed by the next call (ON CONFLICT DO NOTHING), and `planned_at` is
    set only when every page is written, which freezes the list.
    """
    with engine.begin() as connection:
        if is_planned(connection, digest_id=digest_id):
            return PlanSummary(planned=0, skipped=0, variants=0, already_planned=True)
        stored = connection.execute(
            select(VARIANT.c.key, VARIANT.c.id).where(VARIANT.c.digest_id == digest_id)
        )
        variant_ids: dict[str, int | None] = {key: vid for key, vid in stored}
    written: Counter[str] = Counter()
    for page in active_subscriber_pages(engine, page_size=page_size):
        with engine.begin() as connection:
            written.update(_plan_page(connection, digest_id, page, variant_ids, render_variant))
    with engine.begin() as connection:
        connection.execute(
            update(DIGEST).where(DIGEST.c.id == digest_id).values(planned_at=utcnow())
        )
    return PlanSummary(
        planned=written[DeliveryState.PENDING.value],
        skipped=written[DeliveryState.SKIPPED.value],
        variants=sum(1 for v in variant_ids.values() if v is not None),
        already_planned=False,
    )


def _plan_page(
    connection: Connection,
    digest_id: int,
    page: Sequence[Any],
    variant_ids: dict[str, int | None],
    render_variant: VariantRenderer,
) -> list[str]:
    """Write one page's rows, rendering each new category set once; the states written."""
    now = utcnow()
    rows = []
    for person in page:
        key = variant_key(person.categories or [])
        if key not in variant_ids:
            bodies = render_variant(key.split(";") if key else [])
            variant_ids[key] = _store_variant(connection, digest_id, key, bodies)
        vid = variant_ids[key]
        # A variant with nothing to show (None) means the subscriber is skipped this week.
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
    return _insert_rows(connection, rows)


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
    statement = insert_ignore(connection, DELIVERY).returning(DELIVERY.c.state)
    return list(connection.execute(statement, rows).scalars().all())


def _store_variant(
    connection: Connection, digest_id: int, key: str, bodies: RenderedBodies | None
) -> int | None:
    if bodies is None:
        return None
    connection.execute(
        insert_ignore(connection, VARIANT).values(
            digest_id=digest_id, key=key, subject=bodies.subject, html=bodies.html, text=bodies.text
        )
    )
    return int(
        connection.execute(
            select(VARIANT.c.id).where(VARIANT.c.digest_id == digest_id, VARIANT.c.key == key)
        ).scalar_one()
    )
