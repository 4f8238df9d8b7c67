"""Migration 0005 (votes and link visits) on a database that already holds a sent week, on
SQLite and PostgreSQL: `digest db upgrade` keeps every row, and the tables match the models."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, func, inspect, select, text
from sqlmodel import SQLModel
from typer.testing import CliRunner

from digest import db
from digest.cli import app as cli
from digest.config import get_settings
from digest.db import alembic_config, current_revision, get_engine
from digest.engagement.visits import LinkKind, record_visit
from digest.engagement.votes import Choice, cast_vote, find_ballot, tool_tally


def _a_sent_week(url: str) -> int:
    """One subscriber, one digest and one sent delivery, written as revision 0004 knew them."""
    now = datetime(2026, 11, 23, 8, 0, tzinfo=UTC).replace(tzinfo=None)
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO subscriber (email, email_key, categories, status, created_at) "
                "VALUES ('ada@example.com', 'ada@example.com', '[]', 'active', :now)"
            ),
            {"now": now},
        )
        connection.execute(
            text(
                "INSERT INTO digest (week, subject, content, created_at, planned_at) "
                "VALUES ('2026-W47', 'Verdicts', :content, :now, :now)"
            ),
            {"now": now, "content": '{"week": "2026-W47"}'},
        )
        connection.execute(
            text(
                "INSERT INTO digestvariant (digest_id, key, subject, html, text) "
                "VALUES (1, '', 'Verdicts', '<p>hi</p>', 'hi')"
            )
        )
        connection.execute(
            text(
                "INSERT INTO delivery (digest_id, subscriber_id, variant_id, email, state, "
                "attempts, updated_at, sent_at) "
                "VALUES (1, 1, 1, 'ada@example.com', 'sent', 1, :now, :now)"
            ),
            {"now": now},
        )
        delivery_id = int(connection.execute(text("SELECT id FROM delivery")).scalar_one())
    engine.dispose()
    return delivery_id


def test_db_upgrade_from_0004_keeps_the_data_and_adds_the_vote_tables(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ops run `digest db upgrade` on a production database: nothing of the ledger is lost, and
    # votes and visits can be kept at once.
    command.upgrade(alembic_config(database_url), "0004")
    delivery_id = _a_sent_week(database_url)
    monkeypatch.setenv("DIGEST_DATABASE_URL", database_url)
    get_settings.cache_clear()
    result = CliRunner().invoke(cli, ["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert "from 0004 to revision 0006" in result.output
    assert current_revision(database_url) == db.SCHEMA_REVISION == "0006"
    engine = get_engine(database_url)
    with engine.begin() as connection:
        assert connection.execute(text("SELECT count(*) FROM delivery")).scalar_one() == 1
        assert {"vote", "linkvisit"} <= set(inspect(connection).get_table_names())
        ballot = find_ballot(connection, delivery_id=delivery_id)
        assert ballot is not None and ballot.week == "2026-W47"
        cast_vote(connection, ballot=ballot, slug="x", choice=Choice.SHIP, now=datetime.now(UTC))
        assert record_visit(
            connection,
            delivery_id=delivery_id,
            kind=LinkKind.VOTE,
            target="x",
            now=datetime.now(UTC),
        )
    with engine.connect() as connection:
        assert tool_tally(connection, slug="x").ship == 1


def test_the_vote_tables_match_the_models_and_go_back_down(database_url: str) -> None:
    # The migrations create exactly what the models declare, and 0006 and 0005 undo cleanly.
    db.upgrade(database_url)
    with get_engine(database_url).connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert differences == []
    delivery_id = _a_sent_week(database_url)
    command.downgrade(alembic_config(database_url), "0004")
    engine = create_engine(database_url)
    with engine.connect() as connection:
        tables = set(inspect(connection).get_table_names())
        assert "vote" not in tables and "linkvisit" not in tables
        found = connection.execute(select(func.count()).select_from(text("delivery"))).scalar()
        assert found == 1 and delivery_id
    engine.dispose()
