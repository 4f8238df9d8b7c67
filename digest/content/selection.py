"""The week's tools: which records are new, which are incumbents, and which are left out, why.

A week is an ISO week in the configured zone, [Monday 00:00, next Monday 00:00) local time
(`digest.weeks`). Records added after the week ends do not exist yet for it and are ignored.

Checks, before anything is paired:

- Records that cannot be shown honestly (a blank name, tagline or category) are excluded.
- Duplicates: records with the same normalised name and vendor (Unicode NFKC, case-folded,
  punctuation other than `+` and `#` read as spaces, whitespace collapsed; no vendor matches
  only no vendor) are one tool. The record kept is the most complete (most optional fields
  filled; reviews count as one field), then the one with more reviews, then the newest, then
  the smallest slug. The week's other records of it are excluded as `duplicate of <kept slug>`.
- A duplicate group straddling the week's start is an incumbent re-listed: the tool is not new,
  whatever slug it comes back under. Its kept record (chosen as above, across all its records)
  is an incumbent; the week's other records are excluded as duplicates, and when the kept one
  is itself from this week an editor flag says so. `canonical_matchups` maps the slugs of
  dropped duplicates to the kept slug, so match-ups on record under an old slug still count.
- New tools without reviews have no panel verdict: they go to `pending` ("also new" with
  "panel verdict pending") and are never paired.
- Flags (editor warnings, nothing excluded): a review quote reused word for word (ignoring case
  and spacing) across different tools, at least one of them new this week; duplicate records of
  a new tool that disagree on pricing; a re-listed incumbent.
"""

from __future__ import annotations

import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import attrgetter
from zoneinfo import ZoneInfo

from digest.catalog.records import ToolRecord
from digest.content.frozen import Exclusion
from digest.weeks import IsoWeek

_KEPT_SYMBOLS = frozenset("+#")
_QUOTE_EXCERPT = 60
_BY_SLUG = attrgetter("slug")


@dataclass(frozen=True)
class WeekSelection:
    """One week's records sorted into what can be paired, shown, compared against, or not."""

    week: IsoWeek
    new: tuple[ToolRecord, ...]  # added in the week, deduplicated, with reviews
    pending: tuple[ToolRecord, ...]  # added in the week, deduplicated, no reviews yet
    incumbents: tuple[ToolRecord, ...]  # added before the week, deduplicated
    excluded: tuple[Exclusion, ...]
    flags: tuple[str, ...]
    # (dropped duplicate slug, kept slug), for every duplicate group, incumbents included.
    aliases: tuple[tuple[str, str], ...] = ()

    def canonical_matchups(self, matchups: Iterable[frozenset[str]]) -> frozenset[frozenset[str]]:
        """Earlier match-ups with dropped duplicate slugs rewritten to the kept slugs."""
        kept: Mapping[str, str] = dict(self.aliases)
        out: set[frozenset[str]] = set()
        for matchup in matchups:
            mapped = frozenset(kept.get(slug, slug) for slug in matchup)
            if len(mapped) == 2:
                out.add(mapped)
        return frozenset(out)


def normalized_name(text: str | None) -> str:
    """The form two names are compared in when looking for duplicates."""
    folded = unicodedata.normalize("NFKC", text or "").casefold()
    kept = "".join(ch if ch.isalnum() or ch in _KEPT_SYMBOLS else " " for ch in folded)
    return " ".join(kept.split())


def identity(tool: ToolRecord) -> tuple[str, str]:
    """Records with the same identity are the same tool."""
    return normalized_name(tool.name), normalized_name(tool.vendor)


def _instant(moment: datetime) -> datetime:
    # Stored times are UTC; a naive one can only have come from there.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _completeness(tool: ToolRecord) -> int:
    filled = (
        bool(tool.vendor and tool.vendor.strip()),
        bool(tool.description and tool.description.strip()),
        bool(tool.url),
        tool.pricing != "unknown",
        bool(tool.license and tool.license.strip()),
        tool.open_weights is not None,
        bool(tool.tags),
        bool(tool.best_for and tool.best_for.strip()),
        tool.community_ship is not None or tool.community_skip is not None,
        bool(tool.reviews),
    )
    return sum(filled)


def _preference(tool: ToolRecord) -> tuple[int, int, float, str]:
    """Sort key: the record to keep comes first."""
    return (
        -_completeness(tool),
        -len(tool.reviews),
        -_instant(tool.added_at).timestamp(),
        tool.slug,
    )


def _unshowable(tool: ToolRecord) -> str | None:
    for field, value in (("name", tool.name), ("tagline", tool.tagline)):
        if not value.strip():
            return f"no {field}"
    if not tool.category.strip():
        return "no category"
    return None


def _quote_key(text: str) -> str:
    return " ".join(text.split()).casefold()


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _QUOTE_EXCERPT else flat[: _QUOTE_EXCERPT - 1].rstrip() + "…"


def _reused_quotes(shown: list[ToolRecord], week_slugs: set[str]) -> list[str]:
    where: dict[str, set[str]] = defaultdict(set)
    spellings: dict[str, set[str]] = defaultdict(set)
    for tool in shown:
        for review in tool.reviews:
            key = _quote_key(review.quote)
            if key:
                where[key].add(tool.slug)
                spellings[key].add(review.quote)
    flags = []
    for key, slugs in where.items():
        if len(slugs) > 1 and slugs & week_slugs:
            listed = ", ".join(sorted(slugs))
            quote = _excerpt(min(spellings[key]))
            flags.append(f'Quote reused word for word in reviews of {listed}: "{quote}"')
    return flags


def _pricing_conflict(kept: ToolRecord, records: list[ToolRecord]) -> str | None:
    stated = {tool.slug: tool.pricing for tool in records if tool.pricing != "unknown"}
    if len(set(stated.values())) < 2:
        return None
    listed = ", ".join(f"{slug}: {pricing}" for slug, pricing in sorted(stated.items()))
    return (
        f"Duplicate records of {kept.slug} disagree on pricing ({listed}); "
        f"the digest shows {kept.pricing}"
    )


def select_week(tools: Iterable[ToolRecord], *, week: IsoWeek, zone: ZoneInfo) -> WeekSelection:
    """Sort the catalog into the week's new tools, pending ones, incumbents and exclusions."""
    start, end = week.window(zone)
    excluded: list[Exclusion] = []
    flags: list[str] = []
    groups: dict[tuple[str, str], list[ToolRecord]] = defaultdict(list)
    seen: set[str] = set()
    for tool in tools:
        if tool.slug in seen:
            raise ValueError(f"two catalog records share the slug {tool.slug!r}")
        seen.add(tool.slug)
        added = _instant(tool.added_at)
        if added >= end:
            continue
        reason = _unshowable(tool)
        if reason is not None:
            if added >= start:
                excluded.append(Exclusion(slug=tool.slug, reason=reason))
            continue
        groups[identity(tool)].append(tool)

    new: list[ToolRecord] = []
    pending: list[ToolRecord] = []
    incumbents: list[ToolRecord] = []
    aliases: list[tuple[str, str]] = []
    for records in groups.values():
        records.sort(key=_preference)
        kept = records[0]
        aliases.extend((tool.slug, kept.slug) for tool in records[1:])
        this_week = [tool for tool in records if _instant(tool.added_at) >= start]
        excluded.extend(
            Exclusion(slug=tool.slug, reason=f"duplicate of {kept.slug}")
            for tool in this_week
            if tool is not kept
        )
        if len(this_week) < len(records):
            incumbents.append(kept)
            if _instant(kept.added_at) >= start:
                first = min(records, key=lambda tool: (_instant(tool.added_at), tool.slug))
                flags.append(
                    f"{kept.slug} re-lists {first.slug}, first added before this week: "
                    "shown as an incumbent, not as new"
                )
            continue
        (new if kept.reviews else pending).append(kept)
        conflict = _pricing_conflict(kept, records)
        if conflict:
            flags.append(conflict)

    week_slugs = {tool.slug for tool in (*new, *pending)}
    flags.extend(_reused_quotes([*new, *pending, *incumbents], week_slugs))
    return WeekSelection(
        week=week,
        new=tuple(sorted(new, key=_BY_SLUG)),
        pending=tuple(sorted(pending, key=_BY_SLUG)),
        incumbents=tuple(sorted(incumbents, key=_BY_SLUG)),
        excluded=tuple(sorted(excluded, key=lambda item: (item.slug, item.reason))),
        flags=tuple(sorted(flags)),
        aliases=tuple(sorted(aliases)),
    )
