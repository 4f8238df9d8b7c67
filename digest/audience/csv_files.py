"""Subscriber CSV files: import (upsert by case-insensitive email) and export.

The import is all or nothing like the catalog's, and it never reactivates anyone who
unsubscribed, bounced or complained: suppression outranks any file.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TextIO

from sqlalchemy import insert
from sqlmodel import Session, col, select

from digest.delivery.states import SUPPRESSED_STATUSES, SubscriberStatus
from digest.errors import ImportFileError
from digest.models import Subscriber

IMPORT_COLUMNS = ["email", "name", "categories", "subscribed_at", "consent_source"]
EXPORT_COLUMNS = [*IMPORT_COLUMNS, "status"]
_EMAIL = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+\.[^@\s<>,;\".]{2,}$")
_CHUNK = 1000


@dataclass(frozen=True)
class SubscriberRow:
    """One valid CSV row."""

    line: int
    email: str
    name: str | None
    categories: tuple[str, ...]
    subscribed_at: datetime | None
    consent_source: str | None
    status: SubscriberStatus | None

    @property
    def key(self) -> str:
        return self.email.casefold()


@dataclass
class SubscriberImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    kept_suppressed: int = 0
    problems: list[str] = field(default_factory=list)


def email_key(email: str) -> str:
    return email.strip().casefold()


def _parse_time(text: str) -> datetime:
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError("is not an ISO 8601 date or time, e.g. 2026-11-02T09:30:00Z") from exc
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _parse_row(line: int, row: dict[str, str | None]) -> SubscriberRow:
    def text(name: str) -> str:
        return (row.get(name) or "").strip()

    email = text("email")
    if not email:
        raise ValueError("field email: is empty; every row needs an address")
    if not _EMAIL.match(email):
        raise ValueError(f"field email: {email!r} is not an email address")
    categories = tuple(dict.fromkeys(c.strip() for c in text("categories").split(";") if c.strip()))
    try:
        subscribed_at = _parse_time(text("subscribed_at")) if text("subscribed_at") else None
    except ValueError as exc:
        raise ValueError(f"field subscribed_at: {text('subscribed_at')!r} {exc}") from exc
    status = None
    if text("status"):
        try:
            status = SubscriberStatus(text("status").lower())
        except ValueError as exc:
            allowed = ", ".join(s.value for s in SubscriberStatus)
            raise ValueError(f"field status: {text('status')!r} is not one of {allowed}") from exc
    return SubscriberRow(
        line=line,
        email=email,
        name=text("name") or None,
        categories=categories,
        subscribed_at=subscribed_at,
        consent_source=text("consent_source") or None,
        status=status,
    )


def parse_subscribers(stream: TextIO, *, source: str) -> tuple[list[SubscriberRow], list[str]]:
    """Valid rows and a description of each invalid one, by line number."""
    reader = csv.DictReader(stream)
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    if "email" not in header:
        raise ImportFileError(
            f"{source} has no 'email' column in its header row. The first line must name the "
            f"columns: {','.join(IMPORT_COLUMNS)}; nothing was imported."
        )
    reader.fieldnames = header
    rows: list[SubscriberRow] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for raw in reader:
        line = reader.line_num
        try:
            row = _parse_row(line, raw)
        except ValueError as exc:
            problems.append(f"line {line}: {exc}")
            continue
        if row.key in seen:
            problems.append(f"line {line}: field email: {row.email!r} repeats line {seen[row.key]}")
            continue
        seen[row.key] = line
        rows.append(row)
    return rows, problems


def _chunks(rows: list[SubscriberRow]) -> Iterator[list[SubscriberRow]]:
    for start in range(0, len(rows), _CHUNK):
        yield rows[start : start + _CHUNK]


def _merge(existing: Subscriber, row: SubscriberRow, now: datetime) -> str:
    changed = False
    if row.name is not None and existing.name != row.name:
        existing.name, changed = row.name, True
    if list(row.categories) != list(existing.categories):
        existing.categories, changed = list(row.categories), True
    if row.subscribed_at is not None and existing.subscribed_at != row.subscribed_at:
        existing.subscribed_at, changed = row.subscribed_at, True
    if row.consent_source is not None and existing.consent_source != row.consent_source:
        existing.consent_source, changed = row.consent_source, True
    suppressed = existing.status in SUPPRESSED_STATUSES
    if row.status is not None and row.status.value != existing.status:
        if suppressed:
            return "kept_suppressed"
        existing.status, existing.status_changed_at, changed = row.status.value, now, True
    return "updated" if changed else "unchanged"


def import_subscribers(
    *, session: Session, path: Path, skip_invalid: bool = False
) -> SubscriberImportReport:
    """Upsert subscribers from a CSV file, in the caller's transaction."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as stream:
            rows, problems = parse_subscribers(stream, source=str(path))
    except UnicodeDecodeError as exc:
        raise ImportFileError(
            f"{path} is not UTF-8 text. Save it as UTF-8 CSV; nothing was imported."
        ) from exc
    except OSError as exc:
        raise ImportFileError(
            f"Cannot read {path}: {exc.strerror}. Check the path and try again."
        ) from exc
    if problems and not skip_invalid:
        raise ImportFileError(
            f"{path} has {len(problems)} invalid row(s); nothing was imported. Fix them, or pass "
            "--skip-invalid to import the valid rows only:",
            problems,
        )
    report = SubscriberImportReport(problems=problems)
    now = datetime.now(UTC)
    for chunk in _chunks(rows):
        keys = [row.key for row in chunk]
        existing = {
            s.email_key: s
            for s in session.exec(select(Subscriber).where(col(Subscriber.email_key).in_(keys)))
        }
        fresh = []
        for row in chunk:
            current = existing.get(row.key)
            if current is None:
                status = row.status or SubscriberStatus.ACTIVE
                fresh.append(
                    {
                        "email": row.email,
                        "email_key": row.key,
                        "name": row.name,
                        "categories": list(row.categories),
                        "subscribed_at": row.subscribed_at or now,
                        "consent_source": row.consent_source or "import",
                        "status": status.value,
                        "status_changed_at": now,
                        "confirmed_at": now if status == SubscriberStatus.ACTIVE else None,
                        "created_at": now,
                    }
                )
                continue
            outcome = _merge(current, row, now)
            setattr(report, outcome, getattr(report, outcome) + 1)
            if outcome == "updated":
                session.add(current)
        if fresh:
            session.execute(insert(Subscriber), fresh)
            report.created += len(fresh)
    session.flush()
    return report


def export_rows(session: Session) -> Iterable[list[str]]:
    """Every subscriber as export columns, in id order, read in keyset-paged chunks."""
    last_id = 0
    while True:
        page = session.exec(
            select(Subscriber)
            .where(col(Subscriber.id) > last_id)
            .order_by(col(Subscriber.id))
            .limit(_CHUNK)
        ).all()
        if not page:
            return
        for s in page:
            yield [
                s.email,
                s.name or "",
                ";".join(s.categories),
                s.subscribed_at.isoformat().replace("+00:00", "Z") if s.subscribed_at else "",
                s.consent_source or "",
                s.status,
            ]
        last_id = page[-1].id or last_id


def write_export(session: Session, stream: TextIO) -> int:
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    count = 0
    for row in export_rows(session):
        writer.writerow(row)
        count += 1
    return count


def export_text(session: Session) -> str:
    buffer = io.StringIO()
    write_export(session, buffer)
    return buffer.getvalue()
