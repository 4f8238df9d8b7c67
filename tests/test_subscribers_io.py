"""Subscriber CSV import and export."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from sqlmodel import Session, select

from digest.audience.csv_files import (
    SubscriberImportReport,
    export_warnings,
    import_subscribers,
    unknown_category_subscribers,
    write_export,
)
from digest.catalog.importer import import_catalog
from digest.config import Settings
from digest.db import get_engine, session_scope
from digest.errors import ImportFileError
from digest.models import Subscriber
from tests.support.factories import tool_dict, write_catalog, write_subscribers


def _import(
    settings: Settings, path: Path, *, skip_invalid: bool = False
) -> SubscriberImportReport:
    with session_scope(get_engine(settings.database_url)) as session:
        return import_subscribers(session=session, path=path, skip_invalid=skip_invalid)


def _catalog(settings: Settings, tmp_path: Path, categories: list[str]) -> None:
    tools = [tool_dict(f"tool-{i}", category=c) for i, c in enumerate(categories)]
    with session_scope(get_engine(settings.database_url)) as session:
        import_catalog(session=session, path=write_catalog(tmp_path / "catalog.json", tools))


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
    assert report.created == 2
    people = _people(settings)
    assert people["ada@example.com"].categories == ["Developer Tools", "Writing"]
    # Stored as email-validator normalises it: the domain lower-cased, the local part as typed.
    assert people["ada@example.com"].email == "Ada@example.com"
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
    assert (report.created, report.updated) == (0, 1)
    assert len(_people(settings)) == 1
    repeated = _import(
        settings,
        write_subscribers(
            tmp_path / "c.csv", [{"email": "x@example.com"}, {"email": "X@EXAMPLE.com"}]
        ),
    )
    assert repeated.created == 1
    assert "x@example.com" in _people(settings)


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
    assert report.created == 1
    assert len(report.problems) == 3


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
    assert (report.created, report.updated, report.unchanged) == (0, 0, 2)
    assert _export(settings) == first


def test_file_without_email_header_is_rejected(settings: Settings, tmp_path: Path) -> None:
    # A CSV whose header lacks `email` is not a subscriber file.
    path = tmp_path / "s.csv"
    path.write_text("name,categories\nAda,\n")
    with pytest.raises(ImportFileError, match="no 'email' column"):
        _import(settings, path)


def test_repeated_addresses_are_merged_the_last_row_winning_and_reported(
    settings: Settings, tmp_path: Path
) -> None:
    # A file naming one address twice imports it once, with the last row's name and categories.
    path = write_subscribers(
        tmp_path / "s.csv",
        [
            {"email": "x@example.com", "name": "First", "categories": "Writing"},
            {"email": "X@Example.com", "name": "Second", "categories": "Data"},
            {"email": "y@example.com"},
            {"email": "x@EXAMPLE.COM", "name": "", "categories": "Writing;Data"},
            {"email": "Y@example.com", "categories": ""},
        ],
    )
    report = _import(settings, path)
    assert (report.created, report.problems) == (2, [])
    assert report.warnings[0] == (
        "3 repeated addresses merged (the last row wins for name and categories): lines 3, 5, 6"
    )
    people = _people(settings)
    assert set(people) == {"x@example.com", "y@example.com"}
    assert people["x@example.com"].name == "Second"
    assert people["x@example.com"].categories == ["Writing", "Data"]
    assert people["y@example.com"].categories == []
    again = _import(settings, path)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 2)


def test_a_repeated_row_never_lifts_a_suppression_an_earlier_row_set(
    settings: Settings, tmp_path: Path
) -> None:
    # Within a file as across imports, a later "active" does not undo an "unsubscribed".
    header = ["email", "name", "categories", "subscribed_at", "consent_source", "status"]
    rows = [
        {"email": "gone@example.com", "status": "unsubscribed"},
        {"email": "GONE@example.com", "status": "active"},
    ]
    _import(settings, write_subscribers(tmp_path / "s.csv", rows, header=header))
    assert _people(settings)["gone@example.com"].status == "unsubscribed"


def test_repeats_do_not_hide_invalid_rows(settings: Settings, tmp_path: Path) -> None:
    # Merging is for valid rows: an invalid one still stops the file and is listed by line.
    rows = [
        {"email": "x@example.com"},
        {"email": "X@example.com", "subscribed_at": "someday"},
        {"email": "x@example.com"},
    ]
    path = write_subscribers(tmp_path / "s.csv", rows)
    with pytest.raises(ImportFileError, match="line 3: field subscribed_at"):
        _import(settings, path)
    assert _people(settings) == {}
    report = _import(settings, path, skip_invalid=True)
    assert report.created == 1
    assert len(report.problems) == 1
    assert report.warnings == [
        "1 repeated address merged (the last row wins for name and categories): line 4"
    ]


def test_a_name_with_a_line_break_is_an_invalid_row(settings: Settings, tmp_path: Path) -> None:
    # A name goes into the To header; a line break there would add a header of its own.
    rows = [{"email": "ada@example.com", "name": "Ada\r\nBcc: everyone@example.com"}]
    with pytest.raises(ImportFileError, match="field name") as caught:
        _import(settings, write_subscribers(tmp_path / "s.csv", rows))
    assert "control characters" in str(caught.value)
    assert _people(settings) == {}


def test_unknown_categories_are_imported_with_a_warning_naming_the_known_ones(
    settings: Settings, tmp_path: Path
) -> None:
    # A category no tool has would never be mailed: the import says so, comparing case-blind.
    _catalog(settings, tmp_path, ["Writing", "Developer Tools", "writing"])
    rows = [
        {"email": "a@example.com", "categories": "Robotics;writing"},
        {"email": "b@example.com", "categories": "robotics"},
        {"email": "c@example.com", "categories": "developer  tools"},
        {"email": "d@example.com"},
    ]
    report = _import(settings, write_subscribers(tmp_path / "s.csv", rows))
    assert report.created == 4
    [warning] = report.warnings
    assert warning.startswith("category 'Robotics' is not in the catalog")
    assert "(chosen by line 2, line 3)" in warning
    assert "Known categories: Developer Tools, Writing." in warning
    assert _people(settings)["b@example.com"].categories == ["robotics"]


def test_the_export_names_subscribers_whose_categories_the_catalog_lacks(
    settings: Settings, tmp_path: Path
) -> None:
    # The export's columns stay fixed; the subscribers it should warn about come separately.
    _catalog(settings, tmp_path, ["Writing"])
    rows = [
        {"email": "radia@example.com", "categories": "Robotics;Writing"},
        {"email": "tim@example.com", "categories": "WRITING"},
    ]
    _import(settings, write_subscribers(tmp_path / "s.csv", rows))
    with Session(get_engine(settings.database_url)) as session:
        unknown = unknown_category_subscribers(session)
        warnings = export_warnings(session)
    assert [(u.email, u.categories) for u in unknown] == [("radia@example.com", ["Robotics"])]
    [warning] = warnings
    assert "'Robotics'" in warning and "radia@example.com" in warning
    assert _export(settings).splitlines()[0] == (
        "email,name,categories,subscribed_at,consent_source,status"
    )


def test_formula_cells_are_escaped_on_export_and_read_back_on_import(
    settings: Settings, tmp_path: Path
) -> None:
    # No exported cell starts a spreadsheet formula, and importing the export changes nothing.
    rows = [
        {"email": "=cmd@example.com", "name": '=HYPERLINK("http://x")', "categories": "@x"},
        {"email": "+one@example.com", "name": "-1", "consent_source": "+form"},
        {"email": "-two@example.com", "name": "''=quoted twice", "categories": "Writing"},
        {"email": "three@example.com", "name": "'plain", "consent_source": "@import"},
    ]
    _import(settings, write_subscribers(tmp_path / "a.csv", rows))
    first = _export(settings)
    for line in first.splitlines()[1:]:
        for cell in next(csv.reader([line])):
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), cell
    assert "'=cmd@example.com" in first
    exported = tmp_path / "export.csv"
    exported.write_text(first)
    report = _import(settings, exported)
    assert (report.created, report.updated, report.unchanged) == (0, 0, 4)
    assert _export(settings) == first
    people = _people(settings)
    assert people["=cmd@example.com"].name == '=HYPERLINK("http://x")'
    # A file's own escape is taken off on import, so this name is stored with one quote.
    assert people["-two@example.com"].name == "'=quoted twice"
    assert people["three@example.com"].name == "'plain"


def test_export_out_writes_into_a_pipe_and_refuses_what_it_cannot_write(
    settings: Settings, tmp_path: Path
) -> None:
    # A pipe or a device is written to, never replaced by a file (as root, --out /dev/stdout
    # replaced the link); a folder or a missing folder is a sentence, with nothing left behind.
    import os
    import threading

    from tests.support.cli import assert_user_error, run_digest

    _import(settings, write_subscribers(tmp_path / "a.csv", [{"email": "ada@example.com"}]))
    env = {"DIGEST_DATABASE_URL": settings.database_url}
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    received: list[str] = []
    reader = threading.Thread(
        target=lambda: received.append(pipe.read_text(encoding="utf-8")), daemon=True
    )
    reader.start()
    done = run_digest("subscribers", "export", "--out", str(pipe), cwd=tmp_path, env=env)
    reader.join(timeout=30)
    assert done.returncode == 0, done.stderr
    assert pipe.is_fifo() and "ada@example.com" in received[0]

    (tmp_path / "folder").mkdir()
    for out in ("folder", "missing/x.csv"):
        refused = run_digest("subscribers", "export", "--out", out, cwd=tmp_path, env=env)
        assert_user_error(refused, "Cannot write the export to", "Give --out a file")
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_a_line_without_end_is_refused_in_bounded_memory(
    settings: Settings, tmp_path: Path
) -> None:
    # The cells' cap applies once a line is read whole: a file of no line breaks (/dev/zero, a
    # binary dump) was read into memory until it ran out. A line is capped before it is kept.
    from digest.audience.csv_files import MAX_LINE_CHARACTERS

    endless = tmp_path / "endless.csv"
    endless.write_text("email," + "x" * MAX_LINE_CHARACTERS, encoding="utf-8")
    with pytest.raises(ImportFileError, match="line 1 is longer than 1,048,576 characters"):
        _import(settings, endless)
