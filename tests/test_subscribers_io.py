"""Subscriber CSV import and export."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from sqlmodel import Session, select

from digest.audience.csv_files import import_subscribers, write_export
from digest.config import Settings
from digest.db import get_engine, session_scope
from digest.errors import ImportFileError
from digest.models import Subscriber
from tests.support.factories import write_subscribers


def _import(settings: Settings, path: Path, *, skip_invalid: bool = False) -> object:
    with session_scope(get_engine(settings.database_url)) as session:
        return import_subscribers(session=session, path=path, skip_invalid=skip_invalid)


def _people(settings: Settings) -> dict[str, Subscriber]:
    with Session(get_engine(settings.database_url)) as session:
        return {s.email_key: s for s in session.exec(select(Subscriber))}


def _export(settings: Settings) -> str:
    buffer = io.StringIO()
    with Session(get_engine(settings.database_url)) as session:
        write_export(session, buffer)
    return buffer.getvalue()


def test_import_creates_active_subscribers_with_categories(
    settings: Settings, tmp_path: Path
) -> None:
    # Only email is required; categories split on ';'; new subscribers are active.
    path = write_subscribers(
        tmp_path / "s.csv",
        [
            {"email": "Ada@Example.com", "name": "Ada", "categories": "Developer Tools; Writing"},
            {"email": "bob@example.com"},
        ],
    )
    report = _import(settings, path)
    assert report.created == 2  # type: ignore[attr-defined]
    people = _people(settings)
    assert people["ada@example.com"].categories == ["Developer Tools", "Writing"]
    assert people["ada@example.com"].email == "Ada@Example.com"
    assert people["bob@example.com"].categories == []
    assert {p.status for p in people.values()} == {"active"}


def test_emails_match_case_insensitively(settings: Settings, tmp_path: Path) -> None:
    # The same address in another case is the same subscriber, within a file and across imports.
    _import(
        settings,
        write_subscribers(tmp_path / "a.csv", [{"email": "ada@example.com", "name": "Ada"}]),
    )
    report = _import(
        settings,
        write_subscribers(tmp_path / "b.csv", [{"email": "ADA@EXAMPLE.COM", "name": "Ada L."}]),
    )
    assert (report.created, report.updated) == (0, 1)  # type: ignore[attr-defined]
    assert len(_people(settings)) == 1
    with pytest.raises(ImportFileError, match="repeats line 2"):
        _import(
            settings,
            write_subscribers(
                tmp_path / "c.csv", [{"email": "x@example.com"}, {"email": "X@example.com"}]
            ),
        )


def test_invalid_rows_import_nothing_and_are_listed_by_line(
    settings: Settings, tmp_path: Path
) -> None:
    # A bad row stops the whole file, and the error gives every bad line.
    path = write_subscribers(
        tmp_path / "s.csv",
        [
            {"email": "good@example.com"},
            {"email": "not-an-address"},
            {"email": ""},
            {"email": "late@example.com", "subscribed_at": "yesterday"},
        ],
    )
    with pytest.raises(ImportFileError) as caught:
        _import(settings, path)
    message = str(caught.value)
    assert "line 3" in message and "line 4" in message and "line 5" in message
    assert "line 2" not in message
    assert _people(settings) == {}
    report = _import(settings, path, skip_invalid=True)
    assert report.created == 1  # type: ignore[attr-defined]
    assert len(report.problems) == 3  # type: ignore[attr-defined]


def test_import_never_reactivates_a_suppressed_subscriber(
    settings: Settings, tmp_path: Path
) -> None:
    # Unsubscribed, bounced and complained people stay suppressed whatever a file says.
    rows = [{"email": f"{s}@example.com"} for s in ("unsub", "bounce", "spam")]
    _import(settings, write_subscribers(tmp_path / "a.csv", rows))
    with session_scope(get_engine(settings.database_url)) as session:
        for person in session.exec(select(Subscriber)):
            person.status = {"unsub": "unsubscribed", "bounce": "bounced", "spam": "complained"}[
                person.email.split("@")[0]
            ]
            session.add(person)
    again = [{**row, "status": "active"} for row in rows]
    header = ["email", "name", "categories", "subscribed_at", "consent_source", "status"]
    _import(settings, write_subscribers(tmp_path / "b.csv", again, header=header))
    _import(settings, write_subscribers(tmp_path / "c.csv", rows))
    assert {p.status for p in _people(settings).values()} == {
        "unsubscribed",
        "bounced",
        "complained",
    }


def test_importing_an_export_changes_nothing(settings: Settings, tmp_path: Path) -> None:
    # export -> import is a no-op: same rows, same statuses, nothing updated.
    _import(
        settings,
        write_subscribers(
            tmp_path / "a.csv",
            [
                {
                    "email": "ada@example.com",
                    "name": "Lovelace, Ada",
                    "categories": "Writing;Data",
                    "subscribed_at": "2026-01-05T09:00:00Z",
                    "consent_source": "form",
                },
                {"email": "bob@example.com"},
            ],
        ),
    )
    first = _export(settings)
    assert first.splitlines()[0] == "email,name,categories,subscribed_at,consent_source,status"
    exported = tmp_path / "export.csv"
    exported.write_text(first)
    report = _import(settings, exported)
    assert (report.created, report.updated, report.unchanged) == (0, 0, 2)  # type: ignore[attr-defined]
    assert _export(settings) == first


def test_file_without_email_header_is_rejected(settings: Settings, tmp_path: Path) -> None:
    # A CSV whose header lacks `email` is not a subscriber file.
    path = tmp_path / "s.csv"
    path.write_text("name,categories\nAda,\n")
    with pytest.raises(ImportFileError, match="no 'email' column"):
        _import(settings, path)
