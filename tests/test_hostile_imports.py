"""Hostile and odd import files: a sentence naming record and field, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import Session, select

from digest.catalog.importer import import_catalog, load_tools
from digest.config import Settings
from digest.db import get_engine, session_scope
from digest.models import Subscriber, Tool
from tests.support.cli import assert_user_error, run_digest
from tests.support.factories import tool_dict, write_catalog, write_subscribers

_FORMAT = '{"format": "verdict-digest/catalog@1", "tools": '
_LATE = "9999-12-31T23:00:00-05:00"


def _env(url: str, tmp_path: Path) -> dict[str, str]:
    return {"DIGEST_DATABASE_URL": url, "DIGEST_OUTBOX_DIR": str(tmp_path / "outbox")}


def _tools(url: str) -> list[Tool]:
    with Session(get_engine(url)) as session:
        return list(session.exec(select(Tool)))


def _subscribers(url: str) -> list[Subscriber]:
    with Session(get_engine(url)) as session:
        return list(session.exec(select(Subscriber)))


def _raw_catalog(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (_FORMAT + "[" * 200_000 + "]" * 200_000 + "}", ["nests", "too deeply"]),
        (
            _FORMAT + '[{"slug": "a", "community": {"ship": ' + "9" * 5000 + "}}]}",
            ["record 0", "community.ship"],
        ),
        (
            json.dumps(
                {
                    "format": "verdict-digest/catalog@1",
                    "tools": [tool_dict("a", community={"ship": 1e30})],
                }
            ),
            ["record 0", "community.ship"],
        ),
        (
            json.dumps(
                {"format": "verdict-digest/catalog@1", "tools": [tool_dict("a", added_at=_LATE)]}
            ),
            ["record 0", "added_at"],
        ),
        (
            json.dumps(
                {"format": "verdict-digest/catalog@1", "tools": [tool_dict("a", name="N" * 5000)]}
            ),
            ["record 0", "field name", "200"],
        ),
        (
            json.dumps(
                {
                    "format": "verdict-digest/catalog@1",
                    "tools": [
                        tool_dict(
                            "a",
                            reviews=[{"reviewer": "R", "verdict": "ship", "quote": "q" * 100_000}],
                        )
                    ],
                }
            ),
            ["record 0", "reviews.0.quote", "1000"],
        ),
        (
            json.dumps(
                {
                    "format": "verdict-digest/catalog@1",
                    "tools": [tool_dict("a", url="https://x.example/\ud800")],
                }
            ),
            ["record 0", "url"],
        ),
    ],
    ids=[
        "nesting",
        "digits",
        "count-1e30",
        "year-9999",
        "long-name",
        "long-quote",
        "surrogate-url",
    ],
)
def test_hostile_catalog_is_a_user_error_naming_record_and_field(
    database_url: str, tmp_path: Path, text: str, fragments: list[str]
) -> None:
    # Every hostile catalog gets a sentence and a non-zero exit, and imports nothing.
    path = _raw_catalog(tmp_path / "c.json", text)
    result = run_digest(
        "catalog", "import", str(path), cwd=tmp_path, env=_env(database_url, tmp_path)
    )
    assert_user_error(result, *fragments)
    assert _tools(database_url) == []


def test_control_and_bidi_characters_are_removed_at_the_catalog_door_with_a_warning(
    database_url: str, tmp_path: Path
) -> None:
    # NUL, C1 controls, noncharacters, lone surrogates and bidi controls never reach the database.
    dirty = "A\x00b\x85c\ufffed\ufdd0e\ud800f\u202eg\th\ni"
    record = tool_dict(
        "dirty",
        name=dirty,
        tags=["ok", "t\x07"],
        reviews=[{"reviewer": "R\u2066", "verdict": "ship", "quote": "Q\x1b"}],
    )
    path = _raw_catalog(
        tmp_path / "c.json", json.dumps({"format": "verdict-digest/catalog@1", "tools": [record]})
    )
    result = run_digest(
        "catalog", "import", str(path), cwd=tmp_path, env=_env(database_url, tmp_path)
    )
    assert result.returncode == 0, result.stderr
    for fragment in (
        "record 0",
        "field name",
        "U+0000",
        "U+202E",
        "tags.1",
        "reviews.0.reviewer",
        "reviews.0.quote",
    ):
        assert fragment in result.stderr
    with Session(get_engine(database_url)) as session:
        (tool,) = load_tools(session)
    assert tool.name == "Abcdefg\th\ni"
    assert tool.tags == ("ok", "t")
    assert (tool.reviews[0].reviewer, tool.reviews[0].quote) == ("R", "Q")


def test_catalog_import_report_lists_the_cleaned_fields(settings: Settings, tmp_path: Path) -> None:
    # The library's report carries the warnings the CLI prints.
    path = write_catalog(tmp_path / "c.json", [tool_dict("a", tagline="T\u202dx")])
    with session_scope(get_engine(settings.database_url)) as session:
        report = import_catalog(session=session, path=path)
    assert report.created == 1
    assert report.warnings and "field tagline" in report.warnings[0]


@pytest.mark.parametrize(
    ("content", "fragments"),
    [
        (
            b"email,name,email,categories\na@example.com,A,b@example.com,\n",
            ["names the column 'email' twice", "columns 1 and 3", "Keep one"],
        ),
        (
            b"email,name,categories\na@example.com,Doe, Jane,Writing\n",
            ["line 2", "4 cells where the header names 3", "double quotes"],
        ),
        (
            b'email,name\na@example.com,"Open,,\nb@example.com,B\nc@example.com,C\n',
            ["line 2", "from line 2 to line 4", "never closed"],
        ),
        ("email,name\na@example.com,A\n".encode("utf-16-le"), ["not UTF-8", "UTF-16"]),
    ],
    ids=["column-twice", "unquoted-comma", "quote-left-open", "utf-16-without-bom"],
)
def test_an_ambiguous_subscriber_file_is_refused_with_its_cause(
    tmp_path: Path, content: bytes, fragments: list[str]
) -> None:
    # Read as it was, each would have imported something other than what its author meant (the
    # second address, a name cut at its comma, three rows as one name), or blamed the wrong thing.
    path = tmp_path / "people.csv"
    path.write_bytes(content)
    url = f"sqlite:///{tmp_path / 'digest.db'}"
    result = run_digest("subscribers", "import", str(path), cwd=tmp_path, env=_env(url, tmp_path))
    assert_user_error(result, *fragments)
    assert _subscribers(url) == []


def test_empty_cells_past_the_header_are_no_problem(tmp_path: Path) -> None:
    # Spreadsheets write trailing empty cells: only a cell with something in it is refused.
    path = tmp_path / "people.csv"
    path.write_text("email,name\na@example.com,Ada,,\n", encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'digest.db'}"
    result = run_digest("subscribers", "import", str(path), cwd=tmp_path, env=_env(url, tmp_path))
    assert result.returncode == 0, result.stderr
    assert [(s.email, s.name) for s in _subscribers(url)] == [("a@example.com", "Ada")]


@pytest.mark.parametrize(
    ("row", "fragments"),
    [
        ({"email": "a@example.com", "subscribed_at": _LATE}, ["line 2", "subscribed_at"]),
        ({"email": "a@example.com", "consent_source": "x" * 200_000}, ["line 2", "field"]),
        ({"email": "a@example.com", "consent_source": "form\x00"}, ["line 2", "consent_source"]),
        ({"email": "a@example.com", "categories": "Writing\x00"}, ["line 2", "categories"]),
        ({"email": "a@example.com", "name": "N" * 201}, ["line 2", "name", "200"]),
        ({"email": "a@example.com", "name": "Ada\u202e"}, ["line 2", "bidirectional"]),
        (
            {"email": "a@example.com", "name": "=?utf-8?q?a=0D=0ABcc:_x?="},
            ["line 2", "encoded word"],
        ),
    ],
    ids=[
        "year-9999",
        "200kb-field",
        "nul-source",
        "nul-category",
        "long-name",
        "bidi-name",
        "encoded-crlf",
    ],
)
def test_hostile_subscriber_file_is_a_user_error_naming_line_and_field(
    database_url: str, tmp_path: Path, row: dict[str, str], fragments: list[str]
) -> None:
    # Every hostile subscriber row gets a sentence and a non-zero exit, and imports nothing.
    path = write_subscribers(tmp_path / "people.csv", [row])
    result = run_digest(
        "subscribers", "import", str(path), cwd=tmp_path, env=_env(database_url, tmp_path)
    )
    assert_user_error(result, *fragments)
    assert _subscribers(database_url) == []
