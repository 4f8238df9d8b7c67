"""Writing an imported subscriber list: thousands of rows per statement, COPY on PostgreSQL.

Rows go in chunks of `CHUNK`: one SELECT finds the chunk's addresses already stored (by their
key, with every column an import may change), one statement inserts the new ones and one
executemany UPDATE writes the changed ones. The rules are those of a row-by-row upsert: a
stored subscriber gets the file's name, consent source and time where the file gives them and
always its categories; a suppressed one keeps its status whatever the file says
("kept_suppressed"), though its other columns change. Everything runs in the caller's
transaction, so a refused file or a killed process leaves nothing half-imported.

The statements go to the database driver as they are (their column names are this module's
constants; every value is a parameter), with values in the form the driver stores
and returns: SQLAlchemy's per-row conversion of the same values took three to four times as
long as SQLite's own executemany (measured on 100,000 rows). `_Forms` holds the one difference
per database: SQLite keeps times as naive-UTC text with microseconds and JSON as text, exactly
as `digest.db.UTCDateTime` and SQLAlchemy's JSON type write them (a test reads the rows back
through the models); psycopg takes and returns datetimes and decoded JSON. New rows go into
PostgreSQL with COPY (docs/benchmarks.md, "Imports").
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Protocol

from sqlalchemy.engine import Connection

from digest.db import in_chunks
from digest.states import SUPPRESSED_STATUSES, SubscriberStatus

CHUNK = 5000
_NEW = (
    "email",
    "email_key",
    "name",
    "categories",
    "subscribed_at",
    "consent_source",
    "status",
    "status_changed_at",
    "confirmed_at",
    "created_at",
)
# What an import may change of a stored subscriber, in this order after `id`.
_CHANGED = ("name", "categories", "subscribed_at", "consent_source", "status", "status_changed_at")
_NAME, _CATEGORIES, _TIME, _SOURCE, _STATUS, _STATUS_AT = range(1, 7)


class ImportRow(Protocol):
    """What this module reads of an imported row (csv_files.SubscriberRow has these)."""

    key: str
    email: str
    name: str | None
    categories: tuple[str, ...]
    subscribed_at: datetime | None
    consent_source: str | None
    status: SubscriberStatus | None


@dataclass
class Outcomes:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    kept_suppressed: int = 0


@lru_cache(maxsize=4096)
def _json(categories: tuple[str, ...]) -> str:
    # As SQLAlchemy's JSON type writes it (json.dumps); a list has a few dozen distinct mixes.
    return json.dumps(list(categories))


def _sqlite_time(moment: datetime | None) -> str | None:
    # digest.db.UTCDateTime's naive UTC, in SQLAlchemy's SQLite text form (always microseconds,
    # so that equal times are equal text).
    if moment is None:
        return None
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


@dataclass(frozen=True)
class _Forms:
    """How one database's driver takes and returns the columns an import writes."""

    mark: str  # the driver's parameter mark
    json_cast: str  # what makes a text parameter JSON
    time: Callable[[datetime | None], Any]
    stored_categories: Callable[[tuple[str, ...]], Any]  # as a SELECT returns them
    categories_param: Callable[[Any], Any]  # stored form -> parameter


_SQLITE = _Forms("?", "", _sqlite_time, _json, lambda stored: stored)
_POSTGRES = _Forms("%s", "::json", lambda moment: moment, list, lambda stored: json.dumps(stored))


def _forms(connection: Connection) -> _Forms:
    return _POSTGRES if connection.dialect.name == "postgresql" else _SQLITE


def _new_row(row: ImportRow, forms: _Forms, now: Any) -> tuple[Any, ...]:
    """The INSERT values of a new subscriber (columns `_NEW`), categories as JSON text."""
    status = row.status or SubscriberStatus.ACTIVE
    return (
        row.email,
        row.key,
        row.name,
        _json(row.categories),
        forms.time(row.subscribed_at) if row.subscribed_at else now,
        row.consent_source or "import",
        status.value,
        now,
        now if status == SubscriberStatus.ACTIVE else None,
        now,
    )


def _apply(stored: list[Any], row: ImportRow, forms: _Forms, now: Any) -> tuple[str, bool]:
    """Apply the row to a stored subscriber (`id` then `_CHANGED`, in stored form, changed in
    place): the outcome, and whether anything is to be written."""
    changed = False
    for index, value in (
        (_NAME, row.name),
        (_TIME, forms.time(row.subscribed_at)),
        (_SOURCE, row.consent_source),
    ):
        if value is not None and stored[index] != value:
            stored[index], changed = value, True
    categories = forms.stored_categories(row.categories)
    if stored[_CATEGORIES] != categories:
        stored[_CATEGORIES], changed = categories, True
    if row.status is not None and row.status.value != stored[_STATUS]:
        if stored[_STATUS] in SUPPRESSED_STATUSES:
            return "kept_suppressed", changed  # other changes still apply, the status never
        stored[_STATUS], stored[_STATUS_AT], changed = row.status.value, now, True
    return ("updated" if changed else "unchanged"), changed


def _stored(connection: Connection, forms: _Forms, keys: list[str]) -> dict[str, list[Any]]:
    columns = ", ".join(_CHANGED)
    values: tuple[Any, ...]
    if forms is _POSTGRES:  # one array parameter: PostgreSQL plans 5,000 separate ones slowly
        where, values = "email_key = ANY(%s)", (keys,)
    else:
        where, values = f"email_key IN ({', '.join([forms.mark] * len(keys))})", tuple(keys)
    statement = f"SELECT email_key, id, {columns} FROM subscriber WHERE {where}"  # noqa: S608
    found = connection.exec_driver_sql(statement, values)
    return {str(key): list(stored) for key, *stored in found}


def _insert(connection: Connection, forms: _Forms, rows: list[tuple[Any, ...]]) -> None:
    if not rows:
        return
    columns = ", ".join(_NEW)
    if forms is _SQLITE:
        marks = ", ".join([forms.mark] * len(_NEW))
        statement = f"INSERT INTO subscriber ({columns}) VALUES ({marks})"  # noqa: S608
        connection.exec_driver_sql(statement, rows)
        return
    driver = connection.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor, cursor.copy(f"COPY subscriber ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _update(connection: Connection, forms: _Forms, rows: list[list[Any]]) -> None:
    if not rows:
        return
    assignments = ", ".join(
        f"{column} = {forms.mark}{forms.json_cast if column == 'categories' else ''}"
        for column in _CHANGED
    )
    values = [
        (*row[_NAME:_CATEGORIES], forms.categories_param(row[_CATEGORIES]), *row[_TIME:], row[0])
        for row in rows
    ]
    statement = f"UPDATE subscriber SET {assignments} WHERE id = {forms.mark}"  # noqa: S608
    connection.exec_driver_sql(statement, values)


def upsert_subscribers(
    connection: Connection, rows: Sequence[ImportRow], now: datetime
) -> Outcomes:
    """Create or update every row by its address key (rules: module docstring)."""
    forms = _forms(connection)
    stamp = forms.time(now)
    outcomes = Outcomes()
    if forms is _SQLITE:
        # 64 MB of page cache for this connection: the address index is built from random keys.
        connection.exec_driver_sql("PRAGMA cache_size = -65536")
    # Into an empty table every row is new (the file's repeats are merged already).
    empty = connection.exec_driver_sql("SELECT 1 FROM subscriber LIMIT 1").first() is None
    for chunk in in_chunks(rows, CHUNK):
        stored = {} if empty else _stored(connection, forms, [row.key for row in chunk])
        fresh: list[tuple[Any, ...]] = []
        changed: list[list[Any]] = []
        for row in chunk:
            current = stored.get(row.key)
            if current is None:
                fresh.append(_new_row(row, forms, stamp))
                continue
            outcome, wrote = _apply(current, row, forms, stamp)
            setattr(outcomes, outcome, getattr(outcomes, outcome) + 1)
            if wrote:
                changed.append(current)
        _insert(connection, forms, fresh)
        _update(connection, forms, changed)
        outcomes.created += len(fresh)
    return outcomes
