"""Planning: one delivery row per active subscriber, each pointing at its rendered variant.

Set-based, never a row at a time: the distinct category sets of the active subscribers are read
once, each variant is rendered once, and the rows are written by
`INSERT ... SELECT` statements that join the subscribers to a small temporary table mapping
each stored category list to its variant, a range of subscriber ids per statement, rows in
variant order so that each variant's rows sit together for the claims. At 1,000,000
subscribers and 64 variants it takes about 4.5 s on the 2-core machine (docs/benchmarks.md);
writing the rows a page at a time from Python took five times as long. Planning resumes where a
crash left it (ON CONFLICT DO NOTHING) and ends by setting `planned_at`, which fixes the
recipient list.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    Table,
    Text,
    case,
    cast,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.expression import Executable

from digest.catalog.records import category_key
from digest.db import insert_ignore
from digest.delivery.ledger.claims import PENDING_ONLY
from digest.delivery.ledger.digests import is_planned
from digest.models import DELIVERY_TABLE as DELIVERY
from digest.models import DIGEST_TABLE as DIGEST
from digest.models import SUBSCRIBER_TABLE as SUBSCRIBER
from digest.models import VARIANT_TABLE as VARIANT
from digest.render.variant import RenderedVariant
from digest.states import DeliveryState, SubscriberStatus
from digest.weeks import utcnow

log = logging.getLogger(__name__)

# Subscriber ids per INSERT ... SELECT: big enough that a variant's rows come in long runs of
# neighbouring ids (about 780 at 64 variants, under one claim), small enough that each
# transaction stays short (the web app and the webhook write meanwhile) and that a chunk's sort
# and its unique index's pages stay in SQLite's cache: at a million subscribers the statements
# took 0.4 to 0.5 s less in all than with chunks of 250,000 (docs/benchmarks.md).
CHUNK_IDS = 50_000

_ACTIVE = SubscriberStatus.ACTIVE.value
# A stored category list as text: the join key between a subscriber and its variant.
_STORED_CATEGORIES = cast(SUBSCRIBER.c.categories, Text)


def variant_key(categories: Sequence[str]) -> str:
    """The variant a subscriber's categories select; '' is every category."""
    return ";".join(sorted({category_key(c) for c in categories if c.strip()}))


# A category set's rendered variant, or None when it has nothing to show (subscriber skipped).
VariantRenderer = Callable[[list[str]], RenderedVariant | None]


@dataclass(frozen=True)
class PlanSummary:
    planned: int
    skipped: int
    variants: int
    already_planned: bool


def stored_category_lists(connection: Connection) -> Counter[str]:
    """Active subscribers per stored category list (as stored, JSON text)."""
    rows = connection.execute(
        select(_STORED_CATEGORIES, func.count())
        .where(SUBSCRIBER.c.status == _ACTIVE)
        .group_by(_STORED_CATEGORIES)
    )
    return Counter({str(stored): int(n) for stored, n in rows})


def distinct_category_lists(connection: Connection) -> set[str]:
    """The stored category lists of active subscribers, without counting them: SQLite keeps
    only the distinct values, where counting sorted every row (0.19 s against 0.54 s at a
    million subscribers)."""
    rows = connection.execute(
        select(_STORED_CATEGORIES).where(SUBSCRIBER.c.status == _ACTIVE).distinct()
    )
    return {str(stored) for (stored,) in rows}


def active_by_variant(connection: Connection) -> Counter[str]:
    """Active subscribers per variant key, without reading the subscribers one by one."""
    counts: Counter[str] = Counter()
    for stored, n in stored_category_lists(connection).items():
        counts[variant_key(_categories(stored))] += n
    return counts


def plan_recipients(
    engine: Engine, *, digest_id: int, render_variant: VariantRenderer, chunk_ids: int = CHUNK_IDS
) -> PlanSummary:
    """Give every active subscriber a delivery row, once; later calls add nobody.

    A crash mid-way is resumed by the next call (ON CONFLICT DO NOTHING), and `planned_at` is
    set only when every row is written, which freezes the list.
    """
    with engine.begin() as connection:
        if is_planned(connection, digest_id=digest_id):
            return PlanSummary(planned=0, skipped=0, variants=0, already_planned=True)
        stored = distinct_category_lists(connection)
        variants = _variants(connection, digest_id, stored, render_variant)
    with engine.connect() as connection:
        _write_rows(connection, digest_id, variants, chunk_ids)
    with engine.begin() as connection:
        connection.execute(
            update(DIGEST).where(DIGEST.c.id == digest_id).values(planned_at=utcnow())
        )
        rows, pending = _row_counts(connection, digest_id)
    return PlanSummary(
        planned=pending,
        skipped=rows - pending,
        variants=len({v for v in variants.values() if v is not None}),
        already_planned=False,
    )


def _row_counts(connection: Connection, digest_id: int) -> tuple[int, int]:
    """The digest's rows, and those pending: each counted from an index alone (0.1 s at a
    million rows, where grouping the rows by state read them all: 0.6 s). No send has claimed
    a row of a digest still being planned, so every row not pending was skipped."""
    of_digest = select(func.count()).select_from(DELIVERY).where(DELIVERY.c.digest_id == digest_id)
    rows = connection.execute(of_digest).scalar_one()
    pending = connection.execute(of_digest.where(PENDING_ONLY)).scalar_one()
    return int(rows), int(pending)


def _categories(stored: str) -> list[str]:
    try:
        value = json.loads(stored)
    except ValueError:
        return []
    return [str(c) for c in value] if isinstance(value, list) else []


def _variants(
    connection: Connection,
    digest_id: int,
    stored: set[str],
    render_variant: VariantRenderer,
) -> dict[str, int | None]:
    """Each stored category list's variant id (None: nothing to show), rendering each variant
    once and keeping the ones an earlier, interrupted planning stored."""
    by_key: dict[str, int | None] = dict(
        connection.execute(
            select(VARIANT.c.key, VARIANT.c.id).where(VARIANT.c.digest_id == digest_id)
        ).all()
    )
    mapping: dict[str, int | None] = {}
    for text in sorted(stored):
        key = variant_key(_categories(text))
        if key not in by_key:
            bodies = render_variant(key.split(";") if key else [])
            by_key[key] = _store_variant(connection, digest_id, key, bodies)
        mapping[text] = by_key[key]
    return mapping


def _write_rows(
    connection: Connection, digest_id: int, variants: dict[str, int | None], chunk_ids: int
) -> None:
    """INSERT ... SELECT the rows, a range of subscriber ids per transaction."""
    plan_map = Table(
        "plan_variant",
        MetaData(),
        Column("categories", Text, primary_key=True),
        Column("variant_id", Integer, nullable=True),
        prefixes=["TEMPORARY"],
    )
    with _bulk_writing(connection):
        with connection.begin():
            plan_map.drop(connection, checkfirst=True)
            plan_map.create(connection)
            if variants:
                connection.execute(
                    plan_map.insert(),
                    [{"categories": text, "variant_id": vid} for text, vid in variants.items()],
                )
            highest = connection.execute(select(func.max(SUBSCRIBER.c.id))).scalar() or 0
        with _checkpoints_beside(connection) as chunk_written:
            for low in range(0, int(highest), chunk_ids):
                with connection.begin():
                    statement = _insert_range(connection, plan_map, digest_id, low, low + chunk_ids)
                    connection.execute(statement)
                chunk_written()
        with connection.begin():
            plan_map.drop(connection)


# SQLite settings of the planning connection while it writes; each is put back as it was.
_BULK_PRAGMAS = {
    # A chunk sorted in memory, not in a temporary file.
    "temp_store": "MEMORY",
    # No foreign-key lookup per row: every id comes from the table it points to, in the same
    # statement.
    "foreign_keys": "OFF",
    # No fsync at each chunk's commit (about 0.2 s of 5.6 s at a million rows). Nothing is lost
    # by it: `planned_at` is set afterwards on a connection that syncs, and that fsync of the
    # WAL file covers every chunk written before it; a crash before then leaves planning to be
    # resumed.
    "synchronous": "NORMAL",
    # No checkpoint inside the writer's commits: `_checkpoints_beside` runs them on another
    # connection meanwhile.
    "wal_autocheckpoint": "0",
}


@contextmanager
def _bulk_writing(connection: Connection) -> Iterator[None]:
    """The planning connection's SQLite settings for bulk writes, put back however it ends: the
    connection goes back to the pool."""
    if connection.dialect.name != "sqlite":
        yield
        return
    before = {
        name: str(connection.exec_driver_sql(f"PRAGMA {name}").scalar()) for name in _BULK_PRAGMAS
    }
    _set_pragmas(connection, _BULK_PRAGMAS)
    try:
        yield
    finally:
        try:
            _set_pragmas(connection, before)
        except SQLAlchemyError:
            connection.invalidate()  # never handed out again with the bulk settings


@contextmanager
def _checkpoints_beside(connection: Connection) -> Iterator[Callable[[], None]]:
    """A function to call after each chunk's commit, which has the WAL copied into the
    database on a connection and thread of its own while the next chunk is written.

    SQLite otherwise checkpoints inside the commit that fills the WAL, on the writer's time; a
    passive checkpoint never blocks the writer, and SQLite leaves the interpreter's lock while
    it works, so it runs on the other core: a million rows planned in 0.2 to 0.3 s less
    (docs/benchmarks.md). Only for a database file in WAL mode; anything else checkpoints as
    it always does. A failed checkpoint is left to SQLite's own, after planning.
    """
    if connection.dialect.name != "sqlite" or not _in_wal_mode(connection):
        yield lambda: None
        return
    written: queue.SimpleQueue[bool] = queue.SimpleQueue()
    engine = connection.engine

    def checkpoint_while_written() -> None:
        try:
            with engine.connect() as helper:
                while written.get():
                    helper.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
        except SQLAlchemyError as error:
            log.warning("planning's checkpoints stopped (SQLite's own follow): %s", error)

    thread = threading.Thread(target=checkpoint_while_written, name="plan-checkpoints")
    thread.start()
    try:
        yield lambda: written.put(True)
    finally:
        written.put(False)
        thread.join()


def _in_wal_mode(connection: Connection) -> bool:
    mode = str(connection.exec_driver_sql("PRAGMA journal_mode").scalar())
    connection.commit()  # the pragma opened no SQLite transaction; end SQLAlchemy's own
    return mode.lower() == "wal"


def _set_pragmas(connection: Connection, pragmas: dict[str, str]) -> None:
    if connection.in_transaction():
        connection.rollback()
    for name, value in pragmas.items():
        connection.exec_driver_sql(f"PRAGMA {name}={value}")
    connection.commit()  # pragmas open no SQLite transaction; end SQLAlchemy's own


def _insert_range(
    connection: Connection, plan_map: Table, digest_id: int, low: int, high: int
) -> Executable:
    """The rows of active subscribers with ids in (low, high], pending or skipped."""
    state = case(
        (plan_map.c.variant_id.is_(None), DeliveryState.SKIPPED.value),
        else_=DeliveryState.PENDING.value,
    )
    rows = (
        select(
            literal(digest_id),
            SUBSCRIBER.c.id,
            plan_map.c.variant_id,
            SUBSCRIBER.c.email,
            SUBSCRIBER.c.name,
            state,
            literal(0),
            literal(utcnow(), type_=DELIVERY.c.updated_at.type),
        )
        .join(plan_map, plan_map.c.categories == _STORED_CATEGORIES)
        .where(
            SUBSCRIBER.c.id > low,
            SUBSCRIBER.c.id <= high,
            SUBSCRIBER.c.status == _ACTIVE,
        )
        # A variant's rows get neighbouring ids, so a claim of a thousand rows of a sparse
        # variant writes a few dozen pages rather than one page per row.
        .order_by(plan_map.c.variant_id, SUBSCRIBER.c.id)
    )
    columns = ["digest_id", "subscriber_id", "variant_id", "email", "name", "state"]
    columns += ["attempts", "updated_at"]
    statement: Executable = insert_ignore(connection, DELIVERY).from_select(columns, rows)
    return statement


def _store_variant(
    connection: Connection, digest_id: int, key: str, bodies: RenderedVariant | None
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
