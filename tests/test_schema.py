"""The schema check every command runs: it agrees with Alembic, creates an empty database once,
and refuses a database that is behind or not ours."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from digest.config import Settings
from digest.db import SCHEMA_REVISION, current_revision, ensure_schema, head_revision
from digest.errors import DatabaseNotReadyError


def test_the_expected_revision_is_alembics_head() -> None:
    # A new migration must move SCHEMA_REVISION too, or every command would refuse the database.
    assert head_revision() == SCHEMA_REVISION


def test_an_empty_database_gets_the_schema_and_a_lagging_one_is_refused(tmp_path: Path) -> None:
    # First use creates the schema; a database left at an older revision is never migrated
    # behind the operator's back.
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    ensure_schema(url)
    assert current_revision(url) == SCHEMA_REVISION
    lagging = f"sqlite:///{tmp_path / 'lagging.db'}"
    ensure_schema(lagging)
    with create_engine(lagging).begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    from digest import db

    db._SCHEMA_CHECKED.discard(lagging)
    with pytest.raises(DatabaseNotReadyError, match="digest db upgrade"):
        ensure_schema(lagging)


def test_a_database_of_someone_else_is_refused(tmp_path: Path) -> None:
    # Tables without our version row: not ours, and nothing is created in it.
    url = f"sqlite:///{tmp_path / 'other.db'}"
    with create_engine(url).begin() as connection:
        connection.execute(text("CREATE TABLE invoices (id INTEGER)"))
    with pytest.raises(DatabaseNotReadyError, match="no verdict-digest schema"):
        ensure_schema(url)


def test_a_failed_statement_does_not_carry_a_subscribers_address(settings: Settings) -> None:
    # Database errors reach logs (the web app's, the run's): the values bound are not in them.
    from sqlalchemy.exc import IntegrityError

    from digest.db import get_engine

    insert = text(
        "INSERT INTO subscriber (email, email_key, categories, status, created_at)"
        " VALUES (:email, :email, '[]', 'no-such-status', '2026-01-01 00:00:00')"
    )
    with (
        pytest.raises(IntegrityError) as failed,
        get_engine(settings.database_url).begin() as connection,
    ):
        connection.execute(insert, {"email": "private.person@example.com"})
    assert "hidden due to hide_parameters" in str(failed.value)
    if settings.database_url.startswith("sqlite"):
        assert "private.person" not in str(failed.value)
    # PostgreSQL's own DETAIL of a constraint failure shows the row: that is the server's text,
    # not the bound values, and is left as the driver gives it.


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://u:hunter2@h/db", "postgresql+psycopg://u:***@h/db"),
        (
            "postgresql+psycopg://u@h/db?password=hunter2",
            "postgresql+psycopg://u@h/db?password=***",
        ),
        ("postgresql+psycopg://u:hun@ter2@h:5/db", "postgresql+psycopg://***@h:5/db"),
        ("postgresql+psycopg://u@h/db?sslpassword=hunter2&sslmode=require", None),
        ("sqlite:///digest.db", "sqlite:///digest.db"),
    ],
)
def test_a_database_url_is_shown_without_its_password_wherever_it_is_given(
    url: str, shown: str | None
) -> None:
    from digest.db import shown_url

    assert "hunter2" not in shown_url(url) and "ter2" not in shown_url(url)
    if shown is not None:
        assert shown_url(url) == shown
