"""Catalog import: all or nothing, every bad record listed, re-import changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import Session, select

from digest.catalog.importer import ImportReport, import_catalog, load_tools
from digest.config import Settings
from digest.db import get_engine, session_scope
from digest.errors import ImportFileError
from digest.models import Review, Tool
from tests.support.cli import assert_user_error, run_digest
from tests.support.factories import tool_dict, write_catalog


def _import(settings: Settings, path: Path, *, skip_invalid: bool = False) -> object:
    with session_scope(get_engine(settings.database_url)) as session:
        return import_catalog(session=session, path=path, skip_invalid=skip_invalid)


def _count_tools(settings: Settings) -> int:
    with Session(get_engine(settings.database_url)) as session:
        return len(session.exec(select(Tool)).all())


def test_valid_catalog_is_imported_with_reviews(settings: Settings, tmp_path: Path) -> None:
    # Every valid record lands with its reviews, in order.
    path = write_catalog(tmp_path / "c.json", [tool_dict("alpha"), tool_dict("beta")])
    report = _import(settings, path)
    assert (report.created, report.updated, report.unchanged) == (2, 0, 0)  # type: ignore[attr-defined]
    with Session(get_engine(settings.database_url)) as session:
        tools = load_tools(session)
        assert [t.slug for t in tools] == ["alpha", "beta"]
        assert [r.verdict for r in tools[0].reviews] == ["ship", "skip"]
        assert tools[0].added_at.tzinfo is not None
        assert len(session.exec(select(Review)).all()) == 4


def test_invalid_record_imports_nothing_and_lists_every_problem(
    settings: Settings, tmp_path: Path
) -> None:
    # A file with an invalid record writes nothing, and the error names each bad record.
    path = write_catalog(
        tmp_path / "c.json",
        [
            tool_dict("good"),
            tool_dict("Bad Slug"),
            tool_dict("no-offset", added_at="2026-11-17T10:00:00"),
            tool_dict("js-url", url="javascript:alert(1)"),
            tool_dict("bad-price", pricing="cheap"),
            tool_dict("bad-score", reviews=[{"reviewer": "X", "verdict": "maybe", "score": 140}]),
        ],
    )
    with pytest.raises(ImportFileError) as caught:
        _import(settings, path)
    message = str(caught.value)
    assert "nothing was imported" in message
    assert "--skip-invalid" in message
    for fragment in (
        "record 1",
        "'Bad Slug'",
        "record 2",
        "added_at",
        "record 3",
        "url",
        "record 4",
        "pricing",
        "record 5",
        "verdict",
        "score",
    ):
        assert fragment in message
    assert "record 0" not in message
    assert _count_tools(settings) == 0


def test_skip_invalid_imports_valid_records_and_still_lists_the_rest(
    settings: Settings, tmp_path: Path
) -> None:
    # --skip-invalid keeps the good records and reports the bad ones.
    path = write_catalog(
        tmp_path / "c.json", [tool_dict("good"), tool_dict("missing", tagline="  ")]
    )
    report = _import(settings, path, skip_invalid=True)
    assert report.created == 1  # type: ignore[attr-defined]
    assert any("tagline" in p for p in report.problems)  # type: ignore[attr-defined]
    assert _count_tools(settings) == 1


def test_a_record_with_several_problems_counts_once_as_left_out(
    tmp_path: Path, settings: Settings
) -> None:
    # Four problems of one record: one record left out, and each problem listed.
    bad = tool_dict("bad", tagline="  ", pricing="cheap", url="javascript:x", added_at="soon")
    path = write_catalog(tmp_path / "c.json", [tool_dict("good"), bad])
    env = {"DIGEST_DATABASE_URL": settings.database_url}
    result = run_digest("catalog", "import", str(path), "--skip-invalid", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "1 created, 0 updated, 0 unchanged, 1 invalid left out." in result.stdout
    assert "Left out 1 invalid record(s):" in result.stderr
    assert result.stderr.count("record 1 (slug 'bad')") == 4
    refused = run_digest("catalog", "import", str(path), cwd=tmp_path, env=env)
    assert_user_error(refused, "has 1 invalid record(s) (4 problem(s)); nothing was imported")


def test_reimporting_the_same_file_changes_nothing(settings: Settings, tmp_path: Path) -> None:
    # A second import of an unchanged file reports every record unchanged and writes nothing new.
    path = write_catalog(tmp_path / "c.json", [tool_dict("alpha"), tool_dict("beta")])
    _import(settings, path)
    with Session(get_engine(settings.database_url)) as session:
        before = {t.slug: (t.id, t.imported_at) for t in session.exec(select(Tool))}
    report = _import(settings, path)
    assert (report.created, report.updated, report.unchanged) == (0, 0, 2)  # type: ignore[attr-defined]
    with Session(get_engine(settings.database_url)) as session:
        after = {t.slug: (t.id, t.imported_at) for t in session.exec(select(Tool))}
    assert before == after


def test_changed_record_is_updated_and_reviews_replaced(settings: Settings, tmp_path: Path) -> None:
    # An upsert by slug replaces the record and its reviews, never duplicating them.
    _import(settings, write_catalog(tmp_path / "a.json", [tool_dict("alpha")]))
    changed = tool_dict(
        "alpha",
        tagline="New tagline",
        reviews=[{"reviewer": "Solo", "verdict": "ship", "quote": "Yes"}],
    )
    report = _import(settings, write_catalog(tmp_path / "b.json", [changed]))
    assert report.updated == 1  # type: ignore[attr-defined]
    with Session(get_engine(settings.database_url)) as session:
        (tool,) = load_tools(session)
    assert tool.tagline == "New tagline"
    assert [r.reviewer for r in tool.reviews] == ["Solo"]


def test_markup_is_removed_at_the_door_and_the_rest_of_the_text_kept(
    settings: Settings, tmp_path: Path
) -> None:
    # Catalog text is plain text: tags (and a script's code) go with a warning, the words stay.
    hostile = "<script>alert('x')</script> RTL 🎉 <b>bold</b>"
    report = _import(
        settings, write_catalog(tmp_path / "c.json", [tool_dict("evil", name=hostile)])
    )
    with Session(get_engine(settings.database_url)) as session:
        (tool,) = load_tools(session)
    assert tool.name == "RTL 🎉 bold"
    assert isinstance(report, ImportReport)
    assert report.warnings == [
        "record 0 (slug 'evil'): field name: removed HTML markup (tags out, their text kept)"
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("not json", "not valid JSON"),
        ('{"tools": []}', "not a catalog file"),
        ('{"format": "verdict-digest/catalog@1"}', 'no "tools" list'),
        # A newer format of ours is named, and so is the upgrade that reads it.
        (
            '{"format": "verdict-digest/catalog@2", "tools": []}',
            'format "verdict-digest/catalog@2"',
        ),
        ('{"format": "verdict-digest/catalog@2\\n", "tools": []}', "Upgrade verdict-digest"),
        ('{"format": 2, "tools": []}', "not a catalog file"),
        ('{"format": "Verdict-Digest/catalog@2", "tools": []}', "Upgrade verdict-digest"),
        ('{"format": "verdict-digest/catalog@0", "tools": []}', 'Write the file in "verdict'),
        ('{"format": "verdict-digest/catalog@x", "tools": []}', 'Write the file in "verdict'),
        ('{"format": "other/catalog@1", "tools": []}', "not a catalog file"),
    ],
)
def test_unreadable_files_name_the_cause(
    settings: Settings, tmp_path: Path, content: str, expected: str
) -> None:
    # A file that is not a catalog at all says so, and imports nothing.
    path = tmp_path / "c.json"
    path.write_text(content)
    with pytest.raises(ImportFileError, match=expected):
        _import(settings, path)


def test_duplicate_slug_in_one_file_is_invalid(settings: Settings, tmp_path: Path) -> None:
    # A slug is the upsert's key: the same slug twice in a file is an error, not an overwrite.
    path = write_catalog(
        tmp_path / "c.json", [tool_dict("alpha"), tool_dict("alpha", name="Other")]
    )
    with pytest.raises(ImportFileError, match="repeats record 0"):
        _import(settings, path)
