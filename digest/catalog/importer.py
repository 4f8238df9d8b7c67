"""Catalog files (`verdict-digest/catalog@1`): validation, upsert, and loading tools as records.

An import is all or nothing: every record is checked first, and a file with an invalid record
writes nothing (unless `skip_invalid`), so a half-imported catalog can never exist.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import delete
from sqlmodel import Session, select

from digest.catalog.records import ReviewRecord, ToolRecord
from digest.catalog.text_cleaning import clean_record
from digest.errors import ImportFileError
from digest.http_urls import is_http_url
from digest.models import Review, Tool

CATALOG_FORMAT = "verdict-digest/catalog@1"
SLUG_PATTERN = r"^[a-z0-9-]+$"
# Far beyond any real vote count, and small enough for every database's integer column.
MAX_COUNT = 1_000_000_000
# The years an added_at may name: any real tool, and nothing a week's arithmetic would overflow.
FIRST_YEAR, LAST_YEAR = 1900, 2999
# Integers longer than this are no count or score; the parser would choke on 4,300 digits.
_MAX_DIGITS = 20


def _encodable(text: str) -> bool:
    """Whether the text can be written as UTF-8 (a lone surrogate cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class ReviewIn(BaseModel):
    """A review as written in the catalog file."""

    model_config = ConfigDict(extra="ignore")

    reviewer: str = Field(min_length=1, max_length=200)
    lens: str | None = Field(default=None, max_length=200)
    verdict: Literal["ship", "skip"]
    score: int | None = Field(default=None, ge=0, le=100)
    quote: str = Field(default="", max_length=1000)


class CommunityIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    ship: int = Field(default=0, ge=0, le=MAX_COUNT)
    skip: int = Field(default=0, ge=0, le=MAX_COUNT)


class ToolIn(BaseModel):
    """A tool as written in the catalog file; the checks follow docs/configuration.md."""

    model_config = ConfigDict(extra="ignore")

    slug: str = Field(pattern=SLUG_PATTERN, max_length=200)
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

    @field_validator("name", "category", "tagline")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("url")
    @classmethod
    def _http_only(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not is_http_url(value.strip()) or not _encodable(value):
            raise ValueError("must be an http(s) URL")
        return value.strip()

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
    # What was imported but changed at the door: characters removed from text fields.
    warnings: list[str] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return len(self.problems)


def _describe_errors(index: int, slug: str, error: ValidationError) -> list[str]:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(record)"
        why = item["msg"].removeprefix("Value error, ")
        lines.append(f"record {index} (slug {slug!r}): field {where}: {why}")
    return lines


@dataclass(frozen=True)
class ParsedCatalog:
    """A file read: its valid records, each invalid one described, each text field cleaned."""

    tools: list[ToolIn]
    problems: list[str]
    warnings: list[str]
    # When the site produced the file (top-level `generated_at`), if it says.
    generated_at: datetime | None = None


def _bounded_int(text: str) -> int | float:
    """A JSON integer; one too long for any count is infinity, which its field then refuses."""
    return int(text) if len(text) <= _MAX_DIGITS else math.inf


def _load_document(raw: bytes, *, source: str) -> tuple[list[Any], datetime | None]:
    """The file's `tools` list and `generated_at`; `ImportFileError` for a file that is not a
    catalog at all."""
    try:
        document = json.loads(raw, parse_int=_bounded_int)
    except RecursionError as exc:
        raise ImportFileError(
            f"{source} nests arrays or objects too deeply to be a catalog. Fix the file and "
            "import it again; nothing was imported."
        ) from exc
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError, or a 5,000-digit number
        raise ImportFileError(
            f"{source} is not valid JSON ({exc}). Fix the file and import it again; "
            "nothing was imported."
        ) from exc
    declared = document.get("format") if isinstance(document, dict) else None
    if isinstance(declared, str) and declared != CATALOG_FORMAT:
        _refuse_other_version(declared, source)
    if not isinstance(document, dict) or declared != CATALOG_FORMAT:
        raise ImportFileError(
            f'{source} is not a catalog file: it needs "format": "{CATALOG_FORMAT}" at the top '
            "level. Check that you passed the catalog, not the subscriber list; nothing was "
            "imported."
        )
    records = document.get("tools")
    if not isinstance(records, list):
        raise ImportFileError(
            f'{source} has no "tools" list. Put the tools in a "tools" array; nothing was imported.'
        )
    return records, _generated_at(document.get("generated_at"), source=source)


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


def _generated_at(value: Any, *, source: str) -> datetime | None:
    """The optional top-level `generated_at`: when the site produced the file, with an offset."""
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
    return moment


def _shown_slug(record: dict[str, Any]) -> str:
    """The record's slug as a message may show it: printable ASCII, at most 80 characters."""
    value = record.get("slug")
    return ascii(value)[1:-1][:80] if isinstance(value, str) else "?"


def parse_catalog(raw: bytes, *, source: str) -> ParsedCatalog:
    """Every valid record and a description of every invalid one (index, slug, field, why)."""
    valid: list[ToolIn] = []
    problems: list[str] = []
    warnings: list[str] = []
    seen: dict[str, int] = {}
    records, generated_at = _load_document(raw, source=source)
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            problems.append(f"record {index}: is not a JSON object")
            continue
        warnings += clean_record(index, record)
        slug = _shown_slug(record)
        try:
            tool = ToolIn.model_validate(record)
        except ValidationError as exc:
            problems.extend(_describe_errors(index, slug, exc))
            continue
        if tool.slug in seen:
            problems.append(
                f"record {index} (slug {slug!r}): field slug: repeats record {seen[tool.slug]}; "
                "a slug may appear once per file"
            )
            continue
        seen[tool.slug] = index
        valid.append(tool)
    return ParsedCatalog(
        tools=valid, problems=problems, warnings=warnings, generated_at=generated_at
    )


def _apply(session: Session, tool_in: ToolIn, existing: Tool | None, now: datetime) -> str:
    digest_of_record = tool_in.content_hash()
    if existing is not None and existing.content_hash == digest_of_record:
        return "unchanged"
    tool = existing or Tool(
        slug=tool_in.slug,
        name="",
        category="",
        tagline="",
        added_at=now,
        content_hash="",
        imported_at=now,
    )
    tool.name = tool_in.name
    tool.vendor = tool_in.vendor
    tool.category = tool_in.category
    tool.tagline = tool_in.tagline
    tool.description = tool_in.description
    tool.url = tool_in.url
    tool.pricing = tool_in.pricing
    tool.license = tool_in.license
    tool.open_weights = tool_in.open_weights
    tool.tags = list(tool_in.tags)  # a new list: in-place JSON changes are not saved
    tool.best_for = tool_in.best_for
    tool.added_at = tool_in.added_at
    tool.community_ship = tool_in.community.ship if tool_in.community else None
    tool.community_skip = tool_in.community.skip if tool_in.community else None
    tool.content_hash = digest_of_record
    tool.imported_at = now
    session.add(tool)
    session.flush()
    assert tool.id is not None
    session.execute(delete(Review).where(Review.tool_id == tool.id))  # type: ignore[arg-type]
    for position, review in enumerate(tool_in.reviews):
        session.add(
            Review(
                tool_id=tool.id,
                position=position,
                reviewer=review.reviewer,
                lens=review.lens,
                verdict=review.verdict,
                score=review.score,
                quote=review.quote,
            )
        )
    return "updated" if existing is not None else "created"


def import_catalog(*, session: Session, path: Path, skip_invalid: bool = False) -> ImportReport:
    """Upsert the tools of a catalog file by slug, in the caller's transaction."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ImportFileError(
            f"Cannot read {path}: {exc.strerror}. Check the path and try again."
        ) from exc
    parsed = parse_catalog(raw, source=str(path))
    return import_parsed(
        session=session, parsed=parsed, source=str(path), skip_invalid=skip_invalid
    )


# What to do about invalid records, as `digest catalog import` says it.
FILE_REMEDY = "Fix them, or pass --skip-invalid to import the valid records only"


def import_parsed(
    *,
    session: Session,
    parsed: ParsedCatalog,
    source: str,
    skip_invalid: bool = False,
    remedy: str = FILE_REMEDY,
) -> ImportReport:
    """Upsert a parsed catalog's tools by slug, in the caller's transaction: all or nothing
    unless `skip_invalid`. `source` names the file or feed in messages."""
    valid, problems = parsed.tools, parsed.problems
    if problems and not skip_invalid:
        raise ImportFileError(
            f"{source} has {len(problems)} invalid record problem(s); nothing was imported. "
            f"{remedy}:",
            problems,
        )
    report = ImportReport(problems=problems, warnings=parsed.warnings)
    existing = {
        tool.slug: tool
        for tool in session.exec(select(Tool).where(Tool.slug.in_([t.slug for t in valid])))  # type: ignore[attr-defined]
    }
    now = datetime.now(UTC)
    for tool_in in valid:
        outcome = _apply(session, tool_in, existing.get(tool_in.slug), now)
        setattr(report, outcome, getattr(report, outcome) + 1)
    return report


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


def catalog_document(tools: list[dict[str, Any]]) -> dict[str, Any]:
    """A catalog file's JSON document around a list of tool dicts."""
    return {"format": CATALOG_FORMAT, "tools": tools}
