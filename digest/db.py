"""Engines, sessions and the column types that both SQLite and PostgreSQL need.

SQLite forgets time zones, so `UTCDateTime` stores naive UTC and hands back aware UTC.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import DateTime, Table, event, inspect, text
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.types import TypeDecorator
from sqlmodel import Session, create_engine

from digest.errors import DatabaseNotReadyError

T = TypeVar("T")


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime in, an aware UTC datetime out, on every backend."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; attach a time zone first")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    # Concurrent writers (a send batch and the web app) wait instead of failing at once.
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def shown_url(url: str) -> str:
    """The database URL as it may be printed: the password replaced by ***, wherever it is
    given (`?password=`, `?sslpassword=` too), and all before the last @ of an address whose
    unescaped @ leaves it unclear where the password ends."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
        secret = {name: "***" for name in parsed.query if _SECRET_PARAMETER.search(name)}
        shown = parsed.update_query_dict(secret).render_as_string(hide_password=True)
        shown = shown.replace("=%2A%2A%2A", "=***")
    except Exception:  # an unparsable URL is reported by whoever opens it
        return "(an unparsable DIGEST_DATABASE_URL)"
    scheme, found, rest = shown.partition("://")
    address, slash, path = rest.partition("/")
    if found and address.count("@") > 1:
        shown = f"{scheme}://***@{address.rpartition('@')[2]}{slash}{path}"
    return shown


_SECRET_PARAMETER = re.compile(r"pass|secret|token|key", re.IGNORECASE)


def missing_sqlite_file(url: str) -> Path | None:
    """The SQLite file `url` names, if it does not exist: read-only commands must not make it."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:
        return None
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    path = Path(parsed.database)
    return None if path.exists() else path


def insert_ignore(connection: Connection, table: Table, *, key: list[str] | None = None) -> Any:
    """`INSERT ... ON CONFLICT DO NOTHING` for the connection's dialect (on `key`, else any).

    Both dialects take `RETURNING` after it, so callers learn which rows were new.
    """
    # Imported here: loading the PostgreSQL dialect costs a SQLite-only command 0.1 s.
    dialect = connection.dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table).on_conflict_do_nothing(index_elements=key)
    if dialect == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table).on_conflict_do_nothing(index_elements=key)
    raise DatabaseNotReadyError(
        f"verdict-digest cannot keep its ledger in a {dialect} database. "
        "Set DIGEST_DATABASE_URL to a PostgreSQL or SQLite database."
    )


# Bound values per statement, kept under every database's cap: PostgreSQL's protocol takes at
# most 65,535, SQLite builds from 3.32 on 32,766 by default.
MAX_BOUND_VALUES = 30_000


def in_chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """`items` in slices of at most `size`, for statements that bind one value per item."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    """One engine per URL per process. A failed statement's error does not carry its values
    (`hide_parameters`): they are subscribers' addresses and names, and errors reach logs."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            hide_parameters=True,
        )
        event.listen(engine, "connect", _configure_sqlite)
        return engine
    return create_engine(url, pool_pre_ping=True, hide_parameters=True)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def migrations_dir() -> Path:
    return Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


def upgrade(url: str) -> tuple[str | None, str]:
    """Migrate the schema to the newest revision; returns (before, after) revisions."""
    from alembic import command

    before = current_revision(url)
    command.upgrade(alembic_config(url), "head")
    return before, head_revision()


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


# The newest migration, which this code expects; a test keeps it equal to Alembic's head. Every
# command checks the schema first, and reading one row here instead of loading Alembic saves
# about 0.2 s of a command that takes 1 s.
SCHEMA_REVISION = "0006"


def current_revision(url: str) -> str | None:
    """The revision stored in the database, or None when it has no verdict-digest schema."""
    with get_engine(url).connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        found = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
        return str(found) if found is not None else None


# URLs whose schema this process has already found current: the check costs queries, and every
# task of a run and every command asks for the engine again.
_SCHEMA_CHECKED: set[str] = set()


def ensure_schema(url: str) -> Engine:
    """The engine for `url`, its schema created if the database is empty.

    An empty database is set up on first use so the demo and a first import just work; a schema
    that exists but lags behind the code is never migrated behind the operator's back.
    """
    engine = get_engine(url)
    if url in _SCHEMA_CHECKED:
        return engine
    current = current_revision(url)
    if current is None:
        if inspect(engine).get_table_names():
            raise DatabaseNotReadyError(
                "The database has tables but no verdict-digest schema version. "
                "Point DIGEST_DATABASE_URL at a database of its own, or an empty one."
            )
        upgrade(url)
    elif current != SCHEMA_REVISION:
        raise DatabaseNotReadyError(
            f"The database schema is at revision {current}, older than this version of "
            "verdict-digest needs. Run `digest db upgrade` to migrate it."
        )
    _SCHEMA_CHECKED.add(url)
    return engine
