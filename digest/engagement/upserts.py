"""The INSERT of each database we keep votes and visits in: both know ON CONFLICT."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table

from digest.errors import DatabaseNotReadyError


def dialect_insert(dialect: str, table: Table) -> Any:
    """`INSERT INTO table` for `dialect` (a connection's `dialect.name`), with ON CONFLICT."""
    # Imported here: loading the PostgreSQL dialect costs a SQLite-only command 0.1 s.
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    if dialect == "sqlite":
        from sqlalchemy.dialects import sqlite

        return sqlite.insert(table)
    raise DatabaseNotReadyError(
        f"verdict-digest cannot keep votes in a {dialect} database. "
        "Set DIGEST_DATABASE_URL to a PostgreSQL or SQLite database."
    )
