"""Catalog files (`verdict-digest/catalog@1`): the format's checks, the import, and loading
tools as records.

An import is all or nothing: a file with an invalid record writes nothing (unless
`skip_invalid`), so a half-imported catalog can never exist. The file is read as a stream
(`reading.py`) and written in batches (`upsert.py`) inside the caller's one transaction: once a
record is found invalid nothing more is written, every record is still checked so that the
report lists them all, and the error rolls the transaction back. Memory stays within a batch of
records, the slugs seen, the report, and the reader's buffer, whatever the file's size.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlmodel import Session, select

from digest.catalog.reading import CatalogReader, NotAnObjectError
from digest.catalog.records import ReviewRecord, ToolRecord
from digest.catalog.text_cleaning import clean_record
from digest.catalog.upsert import BATCH_SIZE, Outcomes, upsert_batch
from digest.errors import ImportFileError
from digest.http_urls import is_http_url
from digest.models import Review, Tool

CATALOG_FORMAT = "verdict-digest/catalog@1"
# Lower-case words of letters and digits joined by single hyphens: no "-", "--" or "a--b".
SLUG_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
_SLUG = re.compile(SLUG_PATTERN)
# Far beyond any real vote count, and small enough for every database's integer column.
MAX_COUNT = 1_000_000_000
# The years an added_at may name: any real tool, and nothing a week's arithmetic would overflow.
FIRST_YEAR, LAST_YEAR = 1900, 2999
# How far ahead of our clock a feed's generated_at may be: the site's clock may run fast.
GENERATED_AT_SKEW = timedelta(minutes=5)


def _encodable(text: str) -> bool:
    """Whether the text can be written as UTF-8 (a lone surrogate cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class ReviewIn(BaseModel):
    """A review as written in the catalog file."""

    # Strict: a string where text is meant, an integer (not a bool, float or "87") for a score.
    model_config = ConfigDict(extra="ignore", strict=True)

    reviewer: str = Field(min_length=1, max_length=200)
    lens: str | None = Field(default=None, max_length=200)
    verdict: Literal["ship", "skip"]
    score: int | None = Field(default=None, ge=0, le=100)
    quote: str = Field(default="", max_length=1000)


class CommunityIn(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    ship: int = Field(default=0, ge=0, le=MAX_COUNT)
    skip: int = Field(default=0, ge=0, le=MAX_COUNT)


class ToolIn(BaseModel):
    """A tool as written in the catalog file; the checks follow docs/configuration.md.

    Strict types: text is a JSON string, counts and scores JSON integers (not `true`, `87.0` or
    `"87"`), `open_weights` `true` or `false`, `added_at` an ISO 8601 string with an offset."""

    model_config = ConfigDict(extra="ignore", strict=True)

    slug: str = Field(max_length=200)
    name: str = Field(min_length=1, max_length=200)
    vendor: str | None = Field(default=None, max_length=200)
    category: str = Field(min_length=1, max_length=100)
    tagline: str = Field(min_length=1, max_length=300)
    description: str | None = Field(default=None, max_length=5000)
    url: str | None = Field(default=None, max_length=2000)
    pricing: Literal["free", "freemium", "paid", "unknown"] = "unknown"
    license: str | None = Field(default=None, max_length=100)
    open_weights: bool | None = None
    tags: list[Annotated[str, Field(max_length=50)]] = Field(default_factory=list, max_length=30)
    best_for: str | None = Field(default=None, max_length=300)
    added_at: datetime
    community: CommunityIn | None = None
    reviews: list[ReviewIn] = Field(default_factory=list, max_length=50)

    @field_validator("slug")
    @classmethod
    def _slug_words(cls, value: str) -> str:
        if not _SLUG.fullmatch(value):
            raise ValueError(
                "must be lower-case letters and digits, in words joined by single hyphens, "
                "e.g. code-llama-4"
            )
        return value

    @field_validator("name", "category", "tagline")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("category")
    @classmethod
    def _no_separator(cls, value: str) -> str:
        # Subscriber files list categories separated by ';': one holding it could not be chosen.
        if ";" in value:
            raise ValueError("must not hold ';', which separates categories in subscriber files")
        return value

    @field_validator("url")
    @classmethod
    def _http_only(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not is_http_url(value.strip()) or not _encodable(value):
            raise ValueError("must be an http(s) URL")
        return value.strip()

    @field_validator("added_at", mode="before")
    @classmethod
    def _iso_text(cls, value: Any) -> datetime:
        # Not pydantic's own parsing: it takes a number as a Unix time, which no catalog means.
        if not isinstance(value, str):
            raise ValueError("must be an ISO 8601 time as a string, e.g. 2026-11-24T10:00:00Z")
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                "must be an ISO 8601 time with an offset, e.g. 2026-11-24T10:00:00Z"
            ) from None

    @field_validator("added_at")
    @classmethod
    def _needs_offset(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must carry a UTC offset, e.g. 2026-11-24T10:00:00Z")
        try:
            moment = value.astimezone(UTC)
        except OverflowError:
            moment = datetime.max.replace(tzinfo=UTC)  # past year 9999 in UTC: out of range below
        if not FIRST_YEAR <= moment.year <= LAST_YEAR:
            raise ValueError(f"must be a time in the years {FIRST_YEAR} to {LAST_YEAR} (UTC)")
        return moment

    def content_hash(self) -> str:
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class ImportReport:
    """What an import did; `problems` lists the records it left out."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    problems: list[str] = field(default_factory=list)
    # What was imported but changed at the door: markup and characters removed from text fields.
    warnings: list[str] = field(default_factory=list)
    # When the site produced the file (top-level `generated_at`), if it says.
    generated_at: datetime | None = None

    # Records left out (one record may have several problems).
    skipped: int = 0

    def count(self, outcomes: Outcomes) -> None:
        self.created += outcomes.created
        self.updated += outcomes.updated
        self.unchanged += outcomes.unchanged


def _describe_errors(index: int, slug: str, error: ValidationError) -> list[str]:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(record)"
        why = item["msg"].removeprefix("Value error, ")
        lines.append(f"record {index} (slug {slug!r}): field {where}: {why}")
    return lines


@dataclass(frozen=True)
class ParsedCatalog:
    """A file read whole: its valid records, each invalid one described, each text field cleaned
    (for checks of a small file; imports stream instead)."""

    tools: list[ToolIn]
    problems: list[str]
    warnings: list[str]
    generated_at: datetime | None = None


def _not_a_catalog(source: str) -> ImportFileError:
    return ImportFileError(
        f'{source} is not a catalog file: it needs "format": "{CATALOG_FORMAT}" at the top '
        "level. Check that you passed the catalog, not the subscriber list; nothing was "
        "imported."
    )


def _check_format(header: dict[str, Any], source: str, *, complete: bool) -> None:
    """The declared format, as soon as it has been read (`complete`: the whole file was)."""
    if "format" not in header and not complete:
        return
    declared = header.get("format")
    if isinstance(declared, str) and declared != CATALOG_FORMAT:
        _refuse_other_version(declared, source)
    if declared != CATALOG_FORMAT:
        raise _not_a_catalog(source)


def _refuse_other_version(declared: str, source: str) -> None:
    """A catalog format of ours, of another version: name it, and what would read it."""
    family, _, version = CATALOG_FORMAT.partition("@")
    named, _, theirs = declared.strip().partition("@")
    if named.casefold() != family.casefold():
        return  # not ours at all: the caller's "not a catalog file" says what is needed
    shown = declared[:60].encode("unicode_escape").decode("ascii")
    newer = theirs.isdigit() and int(theirs) > int(version)
    fix = (
        "Upgrade verdict-digest, or ask the site for the format this version reads"
        if newer
        else f'Write the file in "{CATALOG_FORMAT}" (docs/configuration.md, Catalog)'
    )
    raise ImportFileError(
        f'{source} is written in catalog format "{shown}", and this version of verdict-digest '
        f'reads "{CATALOG_FORMAT}" only. {fix}; nothing was imported.'
    )


def _generated_at(value: Any, *, source: str, now: datetime) -> datetime | None:
    """The optional top-level `generated_at`: when the site produced the file, with an offset,
    and not later than now (a clock skew of `GENERATED_AT_SKEW` aside)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    try:
        moment = moment.astimezone(UTC) if moment is not None and moment.tzinfo else None
    except OverflowError:  # an offset pushing year 1 or 9999 out of range
        moment = None
    if moment is None:
        raise ImportFileError(
            f"{source} has a generated_at that is not an ISO 8601 time with an offset "
            f"({ascii(value)[:60]}). Write it as 2026-11-23T06:00:00Z, or leave it out; "
            "nothing was imported."
        )
    if moment > now + GENERATED_AT_SKEW:
        raise ImportFileError(
            f"{source} says it was generated at {moment.isoformat()}, which is in the future "
            f"(now is {now.replace(microsecond=0).isoformat()}). A feed from the future would "
            "make every week look complete: check the clock of the site that makes it; "
            "nothing was imported."
        )
    return moment


def _shown_slug(record: dict[str, Any]) -> str:
    """The record's slug as a message may show it: printable ASCII, at most 80 characters."""
    value = record.get("slug")
    return ascii(value)[1:-1][:80] if isinstance(value, str) else "?"


class _Checker:
    """Checks records one by one: cleans their text, validates them, refuses repeated slugs."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.refused = 0  # records, where `problems` may hold several lines for one
        self._seen: dict[str, int] = {}

    def check(self, index: int, record: Any) -> ToolIn | None:
        tool = self._checked(index, record)
        if tool is None:
            self.refused += 1
        return tool

    def _checked(self, index: int, record: Any) -> ToolIn | None:
        if not isinstance(record, dict):
            self.problems.append(f"record {index}: is not a JSON object")
            return None
        self.warnings += clean_record(index, record)
        slug = _shown_slug(record)
        try:
            tool = ToolIn.model_validate(record)
        except ValidationError as exc:
            self.problems.extend(_describe_errors(index, slug, exc))
            return None
        if tool.slug in self._seen:
            self.problems.append(
                f"record {index} (slug {slug!r}): field slug: repeats record "
                f"{self._seen[tool.slug]}; a slug may appear once per file"
            )
            return None
        self._seen[tool.slug] = index
        return tool


def _checked_records(
    reader: CatalogReader, checker: _Checker, source: str
) -> Any:  # Iterator[ToolIn]
    """Every valid record of the reader's file, in order; the rest go to the checker's lists."""
    try:
        for index, record in reader.records():
            if index == 0:
                _check_format(reader.header, source, complete=False)
            tool = checker.check(index, record)
            if tool is not None:
                yield tool
    except NotAnObjectError:
        raise _not_a_catalog(source) from None
    _check_format(reader.header, source, complete=True)
    if "tools" in reader.header or not reader.tools_seen:
        raise ImportFileError(
            f'{source} has no "tools" list. Put the tools in a "tools" array; nothing was imported.'
        )


def parse_catalog(raw: bytes, *, source: str, now: datetime | None = None) -> ParsedCatalog:
    """Every valid record and a description of every invalid one (index, slug, field, why)."""
    reader = CatalogReader(io.BytesIO(raw), source=source)
    checker = _Checker()
    tools = list(_checked_records(reader, checker, source))
    return ParsedCatalog(
        tools=tools,
        problems=checker.problems,
        warnings=checker.warnings,
        generated_at=_generated_at(
            reader.header.get("generated_at"), source=source, now=now or datetime.now(UTC)
        ),
    )


# What to do about invalid records, as `digest catalog import` says it.
FILE_REMEDY = "Fix them, or pass --skip-invalid to import the valid records only"


def import_stream(
    *,
    session: Session,
    stream: IO[bytes],
    source: str,
    skip_invalid: bool = False,
    remedy: str = FILE_REMEDY,
    check_generated_at: Callable[[datetime | None], None] | None = None,
    now: datetime | None = None,
) -> ImportReport:
    """Upsert a catalog's tools by slug, in the caller's transaction: all or nothing unless
    `skip_invalid` (the caller's rollback undoes what was written before an error). `source`
    names the file or feed in messages; `check_generated_at` may refuse the file on its
    `generated_at` (the feed's freshness), before any record problem is reported."""
    moment = now or datetime.now(UTC)
    reader = CatalogReader(stream, source=source)
    checker = _Checker()
    report = ImportReport(problems=checker.problems, warnings=checker.warnings)
    batch: list[ToolIn] = []
    for tool in _checked_records(reader, checker, source):
        if checker.problems and not skip_invalid:
            batch.clear()  # the import will be refused: checking on, writing no more
            continue
        batch.append(tool)
        if len(batch) >= BATCH_SIZE:
            report.count(upsert_batch(session, batch, moment))
            batch.clear()
    report.skipped = checker.refused
    report.generated_at = _generated_at(
        reader.header.get("generated_at"), source=source, now=moment
    )
    if check_generated_at is not None:
        check_generated_at(report.generated_at)
    if checker.problems and not skip_invalid:
        raise ImportFileError(
            f"{source} has {checker.refused} invalid record(s) ({len(checker.problems)} "
            f"problem(s)); nothing was imported. {remedy}:",
            checker.problems,
        )
    if batch:
        report.count(upsert_batch(session, batch, moment))
    return report


def import_catalog(*, session: Session, path: Path, skip_invalid: bool = False) -> ImportReport:
    """Upsert the tools of a catalog file by slug, in the caller's transaction."""
    try:
        stream = path.open("rb")
    except OSError as exc:
        raise ImportFileError(
            f"Cannot read {path}: {exc.strerror}. Check the path and try again."
        ) from exc
    with stream:
        try:
            return import_stream(
                session=session, stream=stream, source=str(path), skip_invalid=skip_invalid
            )
        except OSError as exc:  # a directory, or a disk that fails mid-read
            raise ImportFileError(
                f"Cannot read {path}: {exc.strerror}. Check the path and try again."
            ) from exc


def load_tools(session: Session) -> list[ToolRecord]:
    """Every tool with its reviews, as pure records ordered by slug."""
    reviews: dict[int, list[ReviewRecord]] = {}
    for review in session.exec(select(Review).order_by(Review.tool_id, Review.position)):  # type: ignore[arg-type]
        reviews.setdefault(review.tool_id, []).append(
            ReviewRecord(
                reviewer=review.reviewer,
                verdict="ship" if review.verdict == "ship" else "skip",
                quote=review.quote,
                lens=review.lens,
                score=review.score,
            )
        )
    records = []
    for tool in session.exec(select(Tool).order_by(Tool.slug)):
        assert tool.id is not None
        records.append(
            ToolRecord(
                slug=tool.slug,
                name=tool.name,
                category=tool.category,
                tagline=tool.tagline,
                added_at=tool.added_at,
                vendor=tool.vendor,
                description=tool.description,
                url=tool.url,
                pricing=_pricing(tool.pricing),
                license=tool.license,
                open_weights=tool.open_weights,
                tags=tuple(tool.tags),
                best_for=tool.best_for,
                community_ship=tool.community_ship,
                community_skip=tool.community_skip,
                reviews=tuple(reviews.get(tool.id, ())),
            )
        )
    return records


def _pricing(value: str) -> Literal["free", "freemium", "paid", "unknown"]:
    if value == "free":
        return "free"
    if value == "freemium":
        return "freemium"
    if value == "paid":
        return "paid"
    return "unknown"
