"""Subscriber CSV files: import (upsert by the address's matching key) and export.

The import is all or nothing like the catalog's, and it never reactivates anyone who
unsubscribed, bounced or complained: suppression outranks any file. Rows that repeat an address
are merged into one (the last row's name and categories win) and reported, and a category the
catalog does not have is imported but warned about, since no digest would ever include it.

Export cells that a spreadsheet would run as a formula (starting with =, +, -, @, tab or CR)
are written with one more `'` in front, and the import takes that `'` off again, so importing
an export still changes nothing.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import insert
from sqlmodel import Session, col, select

from digest.audience.addresses import (
    NAME_LIMIT,
    AddressError,
    breaking_characters,
    clean_address,
    clean_display_name,
    email_key,
)
from digest.audience.categories import (
    catalog_categories,
    unknown_categories,
    unknown_category_warnings,
)
from digest.errors import ImportFileError
from digest.models import Subscriber
from digest.states import SUPPRESSED_STATUSES, SUPPRESSION_RANK, SubscriberStatus

IMPORT_COLUMNS = ["email", "name", "categories", "subscribed_at", "consent_source"]
EXPORT_COLUMNS = [*IMPORT_COLUMNS, "status"]
_CHUNK = 1000
# The longest cell each column may hold; an address's own limit (254) is the validator's.
CELL_LIMITS = {"email": 320, "name": NAME_LIMIT, "categories": 2000, "consent_source": 200}
_DEFAULT_CELL_LIMIT = 200
# The years a subscribed_at may name: any real sign-up, nothing a date's arithmetic overflows.
FIRST_YEAR, LAST_YEAR = 1900, 2999
# What makes a spreadsheet read a cell as a formula (OWASP's list for CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class SubscriberRow:
    """One valid CSV row (or several rows of one address, merged); `line` is the last of them."""

    line: int
    email: str
    name: str | None
    categories: tuple[str, ...]
    subscribed_at: datetime | None
    consent_source: str | None
    status: SubscriberStatus | None

    @property
    def key(self) -> str:
        return email_key(self.email)


@dataclass(frozen=True)
class ParsedSubscribers:
    """A file read: its valid rows, each invalid one described, the lines merged as repeats."""

    rows: list[SubscriberRow]
    problems: list[str]
    repeated_lines: list[int]


@dataclass
class SubscriberImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    kept_suppressed: int = 0
    problems: list[str] = field(default_factory=list)
    # What was imported but deserves a look: merged repeats, categories the catalog lacks.
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class UnknownChoice:
    """A subscriber who chose categories that the catalog does not have."""

    email: str
    categories: list[str]


def escape_cell(text: str) -> str:
    """The cell as a spreadsheet shows text: one more leading `'` before a formula start."""
    return "'" + text if text.lstrip("'").startswith(_FORMULA_STARTS) else text


def unescape_cell(text: str) -> str:
    """`escape_cell` undone: exactly one `'` taken off a cell it would have escaped."""
    escaped = text.startswith("'") and text.lstrip("'").startswith(_FORMULA_STARTS)
    return text[1:] if escaped else text


def _parse_time(text: str) -> datetime:
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError("is not an ISO 8601 date or time, e.g. 2026-11-02T09:30:00Z") from exc
    try:
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError(f"is not a time in the years {FIRST_YEAR} to {LAST_YEAR}") from exc
    if not FIRST_YEAR <= moment.year <= LAST_YEAR:
        raise ValueError(f"is not a time in the years {FIRST_YEAR} to {LAST_YEAR}")
    return moment


def _parse_status(text: str) -> SubscriberStatus | None:
    if not text:
        return None
    try:
        return SubscriberStatus(text.lower())
    except ValueError as exc:
        allowed = ", ".join(s.value for s in SubscriberStatus)
        raise ValueError(f"field status: {text!r} is not one of {allowed}") from exc


def _parse_row(line: int, row: dict[str, str | None]) -> SubscriberRow:
    def text(name: str) -> str:
        cell = unescape_cell((row.get(name) or "").strip())
        limit = CELL_LIMITS.get(name, _DEFAULT_CELL_LIMIT)
        if len(cell) > limit:
            raise ValueError(f"field {name}: is {len(cell):,} characters long; at most {limit:,}")
        if name != "name" and breaking_characters(cell):  # names say it in their own words
            raise ValueError(
                f"field {name}: holds control characters ({', '.join(breaking_characters(cell))})"
                "; remove them"
            )
        return cell

    raw_email = text("email")
    if not raw_email:
        raise ValueError("field email: is empty; every row needs an address")
    try:
        email = clean_address(raw_email)
    except AddressError as exc:
        raise ValueError(
            f"field email: {raw_email!r} is not an address we can send to. {exc}"
        ) from exc
    try:
        name = clean_display_name(text("name"))
    except AddressError as exc:
        raise ValueError(f"field name: {text('name')!r}: {exc}") from exc
    categories = tuple(dict.fromkeys(c.strip() for c in text("categories").split(";") if c.strip()))
    try:
        subscribed_at = _parse_time(text("subscribed_at")) if text("subscribed_at") else None
    except ValueError as exc:
        raise ValueError(f"field subscribed_at: {text('subscribed_at')!r} {exc}") from exc
    return SubscriberRow(
        line=line,
        email=email,
        name=name,
        categories=categories,
        subscribed_at=subscribed_at,
        consent_source=text("consent_source") or None,
        status=_parse_status(text("status")),
    )


def _merge_repeat(earlier: SubscriberRow, later: SubscriberRow) -> SubscriberRow:
    """One row for an address the file gives twice: the later row wins where it says something.

    Name and categories come from the later row (a blank name keeps the earlier one); a later
    status never weakens an earlier suppression, as an import never does to a stored one.
    """
    status = later.status or earlier.status
    weaker = (
        earlier.status is not None
        and later.status is not None
        and SUPPRESSION_RANK[later.status] < SUPPRESSION_RANK[earlier.status]
    )
    if weaker:
        status = earlier.status
    return replace(
        earlier,
        line=later.line,
        name=later.name if later.name is not None else earlier.name,
        categories=later.categories,
        subscribed_at=later.subscribed_at or earlier.subscribed_at,
        consent_source=later.consent_source or earlier.consent_source,
        status=status,
    )


def _rows_of(reader: csv.DictReader[str], *, source: str) -> Iterator[dict[str, str | None]]:
    """The reader's rows; a line the csv module cannot read becomes `ImportFileError`."""
    try:
        yield from reader
    except csv.Error as exc:
        raise ImportFileError(
            f"{source} line {reader.line_num + 1}: {exc} (a cell may hold at most "
            f"{csv.field_size_limit():,} characters, and quotes must be closed). Fix the line; "
            "nothing was imported."
        ) from exc


def parse_subscribers(stream: TextIO, *, source: str) -> ParsedSubscribers:
    """Valid rows (repeats merged) and a description of each invalid one, by line number."""
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
    repeated: list[int] = []
    position: dict[str, int] = {}
    for raw in _rows_of(reader, source=source):
        line = reader.line_num
        try:
            row = _parse_row(line, raw)
        except ValueError as exc:
            problems.append(f"line {line}: {exc}")
            continue
        if row.key in position:
            rows[position[row.key]] = _merge_repeat(rows[position[row.key]], row)
            repeated.append(line)
            continue
        position[row.key] = len(rows)
        rows.append(row)
    return ParsedSubscribers(rows=rows, problems=problems, repeated_lines=repeated)


def repeats_warning(lines: list[int]) -> str:
    """The one sentence that reports merged repeats, e.g. "2 repeated addresses merged: ..."."""
    count = len(lines)
    noun = "address" if count == 1 else "addresses"
    where = ", ".join(str(n) for n in lines)
    return (
        f"{count} repeated {noun} merged (the last row wins for name and categories): "
        f"line{'' if count == 1 else 's'} {where}"
    )


def _read(path: Path) -> ParsedSubscribers:
    try:
        with path.open(newline="", encoding="utf-8-sig") as stream:
            return parse_subscribers(stream, source=str(path))
    except UnicodeDecodeError as exc:
        raise ImportFileError(
            f"{path} is not UTF-8 text. Save it as UTF-8 CSV; nothing was imported."
        ) from exc
    except OSError as exc:
        raise ImportFileError(
            f"Cannot read {path}: {exc.strerror}. Check the path and try again."
        ) from exc


def _chunks(rows: list[SubscriberRow]) -> Iterator[list[SubscriberRow]]:
    for start in range(0, len(rows), _CHUNK):
        yield rows[start : start + _CHUNK]


def _update(existing: Subscriber, row: SubscriberRow, now: datetime) -> str:
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


def _new_subscriber(row: SubscriberRow, now: datetime) -> dict[str, Any]:
    status = row.status or SubscriberStatus.ACTIVE
    return {
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


def _upsert(session: Session, rows: list[SubscriberRow], report: SubscriberImportReport) -> None:
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
                fresh.append(_new_subscriber(row, now))
                continue
            outcome = _update(current, row, now)
            setattr(report, outcome, getattr(report, outcome) + 1)
            if outcome == "updated":
                session.add(current)
        if fresh:
            session.execute(insert(Subscriber), fresh)
            report.created += len(fresh)
    session.flush()


def import_subscribers(
    *, session: Session, path: Path, skip_invalid: bool = False
) -> SubscriberImportReport:
    """Upsert subscribers from a CSV file, in the caller's transaction."""
    parsed = _read(path)
    if parsed.problems and not skip_invalid:
        raise ImportFileError(
            f"{path} has {len(parsed.problems)} invalid row(s); nothing was imported. Fix them, "
            "or pass --skip-invalid to import the valid rows only:",
            parsed.problems,
        )
    report = SubscriberImportReport(problems=parsed.problems)
    if parsed.repeated_lines:
        report.warnings.append(repeats_warning(parsed.repeated_lines))
    catalog = catalog_categories(session)
    report.warnings += unknown_category_warnings(
        ((f"line {row.line}", unknown_categories(row.categories, catalog)) for row in parsed.rows),
        catalog,
    )
    _upsert(session, parsed.rows, report)
    return report


def _subscriber_pages(session: Session) -> Iterator[list[Subscriber]]:
    """Every subscriber in id order, read in keyset-paged chunks."""
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
        yield list(page)
        last_id = page[-1].id or last_id


def export_rows(session: Session) -> Iterable[list[str]]:
    """Every subscriber as export columns (values as stored, not yet escaped), in id order."""
    for page in _subscriber_pages(session):
        for s in page:
            yield [
                s.email,
                s.name or "",
                ";".join(s.categories),
                s.subscribed_at.isoformat().replace("+00:00", "Z") if s.subscribed_at else "",
                s.consent_source or "",
                s.status,
            ]


def write_export(session: Session, stream: TextIO) -> int:
    """Write the export CSV to `stream`; how many subscribers it holds."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    count = 0
    for row in export_rows(session):
        writer.writerow([escape_cell(cell) for cell in row])
        count += 1
    return count


def unknown_category_subscribers(session: Session) -> list[UnknownChoice]:
    """The subscribers who chose at least one category the catalog does not have, in id order."""
    catalog = catalog_categories(session)
    found = []
    for page in _subscriber_pages(session):
        for s in page:
            unknown = unknown_categories(s.categories, catalog)
            if unknown:
                found.append(UnknownChoice(email=s.email, categories=unknown))
    return found


def export_warnings(session: Session) -> list[str]:
    """What `subscribers export` should say on stderr: categories that nothing will match."""
    unknown = unknown_category_subscribers(session)
    return unknown_category_warnings(
        ((choice.email, choice.categories) for choice in unknown), catalog_categories(session)
    )
