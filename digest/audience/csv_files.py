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
from functools import lru_cache
from pathlib import Path
from typing import Any, TextIO

from sqlmodel import Session, col, or_, select

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
from digest.audience.subscriber_writes import upsert_subscribers
from digest.errors import ImportFileError
from digest.models import Subscriber
from digest.states import SUPPRESSION_RANK, SubscriberStatus
from digest.text import removed_characters

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


@dataclass(slots=True)
class SubscriberRow:
    """One valid CSV row (or several rows of one address, merged); `line` is the last of them."""

    line: int
    email: str
    name: str | None
    categories: tuple[str, ...]
    subscribed_at: datetime | None
    consent_source: str | None
    status: SubscriberStatus | None
    key: str = ""

    def __post_init__(self) -> None:
        if not self.key:
            key = email_key(self.email)
            self.key = self.email if key == self.email else key  # one string, not two equal ones


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


def in_time_range(moment: datetime) -> bool:
    """Whether a subscribed_at lies in the years both import and export accept."""
    return FIRST_YEAR <= moment.year <= LAST_YEAR


def _parse_time(text: str) -> datetime:
    try:
        if len(text) == 10:
            moment = datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
        else:
            moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError("is not an ISO 8601 date or time, e.g. 2026-11-02T09:30:00Z") from exc
    try:
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError as exc:
        raise ValueError(f"is not a time in the years {FIRST_YEAR} to {LAST_YEAR}") from exc
    if not in_time_range(moment):
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


@lru_cache(maxsize=4096)
def _shared(text: str) -> str:
    # One string object for each of the few distinct consent sources of a list.
    return text


@lru_cache(maxsize=4096)
def _categories(cell: str) -> tuple[str, ...]:
    # A list has a few dozen distinct mixes of categories: each is split once.
    return tuple(dict.fromkeys(c.strip() for c in cell.split(";") if c.strip()))


def _cell(row: list[str], index: int | None, name: str) -> str:
    """A cell by its column, trimmed, unescaped, and checked for length and characters."""
    if index is None or index >= len(row):
        return ""
    cell = row[index].strip()
    if cell.startswith("'"):
        cell = unescape_cell(cell)
    limit = CELL_LIMITS.get(name, _DEFAULT_CELL_LIMIT)
    if len(cell) > limit:
        raise ValueError(f"field {name}: is {len(cell):,} characters long; at most {limit:,}")
    if name != "name" and not cell.isprintable():  # names say it in their own words
        bad = breaking_characters(cell) or removed_characters(cell)
        if bad:
            raise ValueError(
                f"field {name}: holds control, invisible or direction characters "
                f"({', '.join(bad)}); remove them"
            )
    return cell


class _RowParser:
    """Reads rows of one file: its columns' positions, and the checks of a row."""

    def __init__(self, columns: dict[str, int], width: int) -> None:
        self.positions = [(name, columns.get(name)) for name in EXPORT_COLUMNS]
        self.width = width  # cells the header names

    def check_width(self, row: list[str]) -> None:
        """A cell beyond the header's columns belongs to no column: most often a comma left
        unquoted in a name ("Doe, Jane"), which shifted every cell after it."""
        if len(row) > self.width and any(cell.strip() for cell in row[self.width :]):
            raise ValueError(
                f"has {len(row)} cells where the header names {self.width} columns; a comma "
                "inside a cell (as in a name like Doe, Jane) needs the cell in double quotes"
            )

    def cells(self, row: list[str]) -> list[str]:
        """The row's cells in `EXPORT_COLUMNS` order, trimmed, unescaped and checked."""
        size = len(row)
        cells = [row[i].strip() if i is not None and i < size else "" for _, i in self.positions]
        joined = "".join(cells)
        if (
            joined.isprintable()
            and max(map(len, cells)) <= _DEFAULT_CELL_LIMIT  # the smallest limit of any column
            and ("'" not in joined or not any(cell.startswith("'") for cell in cells))
        ):
            return cells  # the common case, checked in C: nothing to unescape or refuse
        return [_cell(row, position, name) for (name, position) in self.positions]

    def parse(self, line: int, row: list[str]) -> SubscriberRow:
        if len(row) > self.width:
            self.check_width(row)
        raw_email, raw_name, categories, raw_time, source, status = self.cells(row)
        if not raw_email:
            raise ValueError("field email: is empty; every row needs an address")
        try:
            email = clean_address(raw_email)
        except AddressError as exc:
            raise ValueError(
                f"field email: {raw_email!r} is not an address we can send to. {exc}"
            ) from exc
        try:
            name = clean_display_name(raw_name)
        except AddressError as exc:
            raise ValueError(f"field name: {raw_name!r}: {exc}") from exc
        try:
            subscribed_at = _parse_time(raw_time) if raw_time else None
        except ValueError as exc:
            raise ValueError(f"field subscribed_at: {raw_time!r} {exc}") from exc
        return SubscriberRow(
            line=line,
            email=email,
            name=name,
            categories=_categories(categories),
            subscribed_at=subscribed_at,
            consent_source=_shared(source) or None,
            status=_parse_status(status),
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


def _rows_of(reader: Any, *, source: str) -> Iterator[list[str]]:
    """The reader's rows; a line the csv module cannot read becomes `ImportFileError` naming
    the line its row starts on."""
    read = reader.line_num
    try:
        for row in reader:
            yield row
            read = reader.line_num
    except csv.Error as exc:
        raise ImportFileError(
            f"{source} line {read + 1}: {exc} (a cell may hold at most "
            f"{csv.field_size_limit():,} characters, and quotes must be closed). Fix the line; "
            "nothing was imported."
        ) from exc


def _columns(reader: Any, source: str) -> tuple[dict[str, int], int]:
    """The header row: each column name (trimmed, lower case) and its position, and how many
    cells it names. A column of ours named twice is refused: which one was meant?"""
    try:
        header = next(reader, None)
    except csv.Error:
        header = None
    if any("\0" in name for name in header or []):
        raise ImportFileError(
            f"{source} is not UTF-8 text: its header holds NUL characters, as UTF-16 text does. "
            "Save it as UTF-8 CSV; nothing was imported."
        )
    columns: dict[str, int] = {}
    for position, name in enumerate(header or []):
        key = name.strip().lower()
        if key in columns and key in EXPORT_COLUMNS:
            raise ImportFileError(
                f"{source} names the column '{key}' twice in its header (columns "
                f"{columns[key] + 1} and {position + 1}). Keep one of them; nothing was imported."
            )
        columns[key] = position
    if "email" not in columns:
        raise ImportFileError(
            f"{source} has no 'email' column in its header row. The first line must name the "
            f"columns: {','.join(IMPORT_COLUMNS)}; nothing was imported."
        )
    return columns, len(header or [])


# A line holds at most this many characters: the cells' own cap is checked only once a line is
# read whole, and a file without line breaks (/dev/zero) was read into memory until it ran out.
MAX_LINE_CHARACTERS = 1_048_576


def _capped_lines(stream: TextIO, source: str) -> Iterator[str]:
    number = 0
    while line := stream.readline(MAX_LINE_CHARACTERS):
        number += 1
        if len(line) == MAX_LINE_CHARACTERS and not line.endswith("\n"):
            raise ImportFileError(
                f"{source}: line {number} is longer than {MAX_LINE_CHARACTERS:,} characters, so "
                "this is no subscriber CSV (or its line breaks are missing). Give the export of "
                "a list, one subscriber a line; nothing was imported."
            )
        yield line


def parse_subscribers(stream: TextIO, *, source: str) -> ParsedSubscribers:
    """Valid rows (repeats merged) and a description of each invalid one, by line number."""
    reader = csv.reader(_capped_lines(stream, source))
    parser = _RowParser(*_columns(reader, source))
    rows: list[SubscriberRow] = []
    problems: list[str] = []
    repeated: list[int] = []
    position: dict[str, int] = {}
    read = reader.line_num
    for raw in _rows_of(reader, source=source):
        line, read = read + 1, reader.line_num  # a row's first line: a quoted cell may go on
        if not raw:
            continue  # a blank line, as the csv module's DictReader skips it
        try:
            row = parser.parse(line, raw)
        except ValueError as exc:
            problems.append(f"line {line}: {exc}{_open_quote_hint(line, read)}")
            continue
        earlier = position.get(row.key)
        if earlier is not None:
            rows[earlier] = _merge_repeat(rows[earlier], row)
            repeated.append(line)
            continue
        position[row.key] = len(rows)
        rows.append(row)
    return ParsedSubscribers(rows=rows, problems=problems, repeated_lines=repeated)


def _open_quote_hint(first: int, last: int) -> str:
    """For a row that ran over several lines: a quote opened in it may never have closed."""
    if last <= first:
        return ""
    return (
        f" (this row runs from line {first} to line {last}: if no cell of it should hold a "
        "line break, a double quote opened in it is never closed)"
    )


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
    unknown = lru_cache(maxsize=4096)(lambda chosen: unknown_categories(chosen, catalog))
    choices = ((row.line, unknown(row.categories)) for row in parsed.rows)
    report.warnings += unknown_category_warnings(
        ((f"line {line}", chosen) for line, chosen in choices if chosen), catalog
    )
    outcomes = upsert_subscribers(session.connection(), parsed.rows, datetime.now(UTC))
    report.created, report.updated = outcomes.created, outcomes.updated
    report.unchanged, report.kept_suppressed = outcomes.unchanged, outcomes.kept_suppressed
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


def _shown_time(moment: datetime | None) -> str:
    """A subscribed_at as the export writes it; empty for one outside the years an import
    accepts (stored by an older version), which an import of the export then leaves as it is."""
    if moment is None or not in_time_range(moment):
        return ""
    return moment.isoformat().replace("+00:00", "Z")


def export_rows(session: Session) -> Iterable[list[str]]:
    """Every subscriber as export columns (values as stored, not yet escaped), in id order."""
    for page in _subscriber_pages(session):
        for s in page:
            yield [
                s.email,
                s.name or "",
                ";".join(s.categories),
                _shown_time(s.subscribed_at),
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


def _out_of_range(session: Session) -> list[str]:
    """The addresses whose stored subscribed_at lies outside the years an import accepts."""
    first = datetime(FIRST_YEAR, 1, 1, tzinfo=UTC)
    after = datetime(LAST_YEAR + 1, 1, 1, tzinfo=UTC)
    times = col(Subscriber.subscribed_at)
    found = session.exec(
        select(Subscriber.email)
        .where(or_(times < first, times >= after))
        .order_by(col(Subscriber.id))
    )
    return list(found)


def export_warnings(session: Session) -> list[str]:
    """What `subscribers export` should say on stderr: categories that nothing will match, and
    times left out because no import would take them back."""
    unknown = unknown_category_subscribers(session)
    warnings = unknown_category_warnings(
        ((choice.email, choice.categories) for choice in unknown), catalog_categories(session)
    )
    strays = _out_of_range(session)
    if strays:
        named = ", ".join(strays[:10]) + (
            f" and {len(strays) - 10} more" if len(strays) > 10 else ""
        )
        warnings.append(
            f"subscribed_at left empty for {len(strays)} subscriber(s) whose stored time lies "
            f"outside the years {FIRST_YEAR} to {LAST_YEAR} ({named}); an import of this "
            "export keeps their stored time."
        )
    return warnings
