"""Export and import agree: the same range of times, and importing an export changes nothing for
any stored row; the bulk writer stores values exactly as the models do."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert, select
from sqlmodel import Session

from digest.audience.addresses import (
    AddressError,
    _plain_address,
    clean_address,
    email_key,
)
from digest.audience.csv_files import export_warnings, import_subscribers, write_export
from digest.config import Settings
from digest.db import get_engine, session_scope
from digest.errors import ImportFileError
from digest.models import SUBSCRIBER_TABLE as SUBSCRIBER
from digest.models import Subscriber
from digest.states import SubscriberStatus
from tests.support.factories import write_subscribers

_serial = itertools.count()
_COMPARED = ("email", "email_key", "name", "categories", "subscribed_at", "consent_source")
_COMPARED += ("status", "status_changed_at", "confirmed_at")

# What our doors can store: names a To header takes, categories without ';' or edge spaces.
names = st.none() | st.text(min_size=1, max_size=40).map(str.strip).filter(
    lambda n: n != "" and n.isprintable() and "=?" not in n
)
category = (
    st.text(min_size=1, max_size=20)
    .map(str.strip)
    .filter(lambda c: c != "" and ";" not in c and c.isprintable())
)
moments = st.none() | st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2999, 12, 31, 23, 59, 59, 999999)
).map(lambda moment: moment.replace(tzinfo=UTC))
stored_rows = st.lists(
    st.fixed_dictionaries(
        {
            "name": names,
            "categories": st.lists(category, max_size=4, unique=True),
            "subscribed_at": moments,
            "consent_source": st.none() | st.sampled_from(["import", "web-form", "=cmd", "'x"]),
            "status": st.sampled_from([s.value for s in SubscriberStatus]),
            "local": st.sampled_from(["ada", "Ada.L", "o'brien", "+x", "=sum"]),
        }
    ),
    min_size=1,
    max_size=6,
)


def _store(url: str, rows: list[dict[str, Any]]) -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    with get_engine(url).begin() as connection:
        connection.execute(delete(SUBSCRIBER))
        for row in rows:
            address = f"{row['local']}{next(_serial)}@example.com"
            connection.execute(
                insert(SUBSCRIBER).values(
                    email=address,
                    email_key=email_key(address),
                    name=row["name"],
                    categories=row["categories"],
                    subscribed_at=row["subscribed_at"],
                    consent_source=row["consent_source"],
                    status=row["status"],
                    status_changed_at=now,
                    confirmed_at=now,
                    created_at=now,
                )
            )


def _snapshot(url: str) -> list[tuple[Any, ...]]:
    with get_engine(url).begin() as connection:
        rows = connection.execute(select(SUBSCRIBER).order_by(SUBSCRIBER.c.id)).mappings()
        return [tuple(row[c] for c in _COMPARED) for row in rows]


def _export_file(url: str, path: Path) -> Path:
    with Session(get_engine(url)) as session, path.open("w", encoding="utf-8", newline="") as out:
        write_export(session, out)
    return path


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rows=stored_rows)
def test_importing_an_export_changes_no_stored_row(
    settings: Settings, tmp_path: Path, rows: list[dict[str, Any]]
) -> None:
    # Whatever the app stored, its export imports back as "unchanged", byte for byte.
    url = settings.database_url
    _store(url, rows)
    before = _snapshot(url)
    path = _export_file(url, tmp_path / "export.csv")
    with session_scope(get_engine(url)) as session:
        report = import_subscribers(session=session, path=path)
    assert (report.created, report.updated, report.problems) == (0, 0, [])
    assert report.unchanged + report.kept_suppressed == len(rows)
    assert _snapshot(url) == before


def test_a_time_outside_the_import_range_is_exported_empty_and_kept(
    settings: Settings, tmp_path: Path
) -> None:
    # A year-1 time stored by an older version: the export leaves it out and says so, and
    # importing that export keeps the stored time.
    url = settings.database_url
    ancient = {"name": "Old", "categories": [], "consent_source": "import", "status": "active"}
    _store(url, [{**ancient, "subscribed_at": datetime(1, 1, 1, tzinfo=UTC), "local": "old"}])
    before = _snapshot(url)
    text = _export_file(url, tmp_path / "export.csv").read_text(encoding="utf-8")
    assert text.splitlines()[1].split(",")[3] == ""
    with Session(get_engine(url)) as session:
        assert any("outside the years 1900 to 2999" in w for w in export_warnings(session))
    with session_scope(get_engine(url)) as session:
        import_subscribers(session=session, path=tmp_path / "export.csv")
    assert _snapshot(url) == before


@pytest.mark.parametrize(
    "when", ["0001-01-01", "1899-12-31", "3000-01-01", "0001-01-01T00:00:00Z", "9999-12-31"]
)
def test_a_date_outside_the_range_is_refused_however_it_is_written(
    settings: Settings, tmp_path: Path, when: str
) -> None:
    # A bare date is checked like a full time: no import stores what no import takes back.
    path = write_subscribers(
        tmp_path / "s.csv", [{"email": "a@example.com", "subscribed_at": when}]
    )
    engine = get_engine(settings.database_url)
    with (
        pytest.raises(ImportFileError, match="line 2: field subscribed_at"),
        session_scope(engine) as session,
    ):
        import_subscribers(session=session, path=path)


def test_bulk_written_rows_read_back_through_the_models_as_written(
    settings: Settings, tmp_path: Path
) -> None:
    # The writer bypasses SQLAlchemy's conversions: the models must still read the same values,
    # and SQL comparing a stored time with a bound one must still find it.
    moment = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    path = write_subscribers(
        tmp_path / "s.csv",
        [
            {
                "email": "Zoe@Example.com",
                "name": "Zoë O'Brien",
                "categories": "Writing;Data Analysis",
                "subscribed_at": "2026-03-04T06:06:07+01:00",
                "consent_source": "fair",
            }
        ],
    )
    url = settings.database_url
    with session_scope(get_engine(url)) as session:
        import_subscribers(session=session, path=path)
    with Session(get_engine(url)) as session:
        (person,) = session.exec(select(Subscriber)).scalars()
        found = session.exec(
            select(Subscriber.id).where(Subscriber.subscribed_at == moment)  # type: ignore[arg-type]
        ).all()
    assert (person.email, person.email_key, person.name) == (
        "Zoe@example.com",
        "zoe@example.com",
        "Zoë O'Brien",
    )
    assert person.categories == ["Writing", "Data Analysis"]
    assert person.subscribed_at == moment
    assert person.status == "active" and person.confirmed_at is not None
    assert abs(person.created_at - datetime.now(UTC)) < timedelta(minutes=5)
    assert len(found) == 1


_LOCAL = st.text(
    alphabet=st.sampled_from("abcXYZ09.!#$%&'*+/=?^_`{|}~-\"( )@,:;<>[]\\é"),
    min_size=1,
    max_size=70,
)
_DOMAIN = st.sampled_from(
    [
        "example.com",
        "EXAMPLE.org",
        "x.y.z.example",
        "exa_mple.com",
        "ex--ample.com",
        "-x.com",
        "xn--bcher-kva.example",
        "localhost",
        "example",
        "a.b",
        "ex.123",
        "[127.0.0.1]",
        "e.com.",
    ]
)


def test_plain_addresses_take_the_fast_path() -> None:
    # The shortcut does answer for the addresses lists are made of, normalised as the validator
    # normalises them.
    assert _plain_address("Ada.L+x@Example.COM") == "Ada.L+x@example.com"
    assert _plain_address("o'brien@sub.example.org") == "o'brien@sub.example.org"
    assert _plain_address('"quoted"@example.com') is None


@settings(max_examples=500, deadline=None)
@given(local=_LOCAL, domain=_DOMAIN)
def test_the_fast_address_path_agrees_with_the_validator(local: str, domain: str) -> None:
    # Whenever the shortcut answers, it answers what the full validation would.
    address = f"{local}@{domain}"
    plain = _plain_address(address)
    if plain is None:
        return
    from email_validator import validate_email

    expected = validate_email(address, check_deliverability=False, allow_smtputf8=True)
    assert plain == expected.ascii_email
    try:
        assert clean_address(address) == plain
    except AddressError:
        pytest.fail(f"{address!r} refused by clean_address but taken by the shortcut")
