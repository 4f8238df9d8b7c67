"""Catalog text at the door: markup and the characters no email or page should carry, removed
and named.

An unattended weekly feed must not stop for one stray byte or one `<b>`, so every text field of
a record is cleaned rather than refused, with a warning naming record and field: first HTML
(`digest.catalog.markup`: tags out, their text kept, character references decoded), then the
characters `digest.text` rules out (a decoded reference may have produced one).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from digest.catalog.markup import strip_markup
from digest.text import clean_text

# The text fields of a tool and of a review, as named in the catalog format.
TOOL_TEXT_FIELDS = ("name", "tagline", "category", "vendor", "best_for", "description", "license")
REVIEW_TEXT_FIELDS = ("reviewer", "lens", "quote")
# Longer than any field may be (description: 5,000): such text is refused for its length, so it
# is not worth reading for markup, which costs more than linear time on hostile input.
_MARKUP_SCAN_LIMIT = 20_000
_SPACES = re.compile(r" {2,}")


def _warning(index: int, slug: str, where: str, markup: bool, removed: list[str]) -> str:
    changes = []
    if markup:
        changes.append("removed HTML markup (tags out, their text kept)")
    if removed:
        changes.append(
            f"removed {', '.join(removed)} (control, format, direction, separator, "
            "private-use, noncharacter or surrogate characters)"
        )
    return f"record {index} (slug {slug!r}): field {where}: {'; '.join(changes)}"


def _text_slots(record: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any] | list[Any], Any]]:
    """Every catalog text value of a raw record, as (field path, container, key)."""
    for name in TOOL_TEXT_FIELDS:
        if isinstance(record.get(name), str):
            yield name, record, name
    tags = record.get("tags")
    if isinstance(tags, list):
        for position, tag in enumerate(tags):
            if isinstance(tag, str):
                yield f"tags.{position}", tags, position
    reviews = record.get("reviews")
    if isinstance(reviews, list):
        for position, review in enumerate(reviews):
            if not isinstance(review, dict):
                continue
            for name in REVIEW_TEXT_FIELDS:
                if isinstance(review.get(name), str):
                    yield f"reviews.{position}.{name}", review, name


def clean_field(value: str) -> tuple[str, bool, list[str]]:
    """One catalog text: (cleaned, whether markup was removed, the characters removed)."""
    unmarked = strip_markup(value) if len(value) <= _MARKUP_SCAN_LIMIT else value
    if unmarked != value:  # what stood around a removed tag: no double or edge spaces
        unmarked = _SPACES.sub(" ", unmarked).strip()
    cleaned, removed = clean_text(unmarked)
    return cleaned, unmarked != value, removed


def clean_record(index: int, record: dict[str, Any]) -> list[str]:
    """Clean a raw record's text fields in place; one warning per field that lost anything."""
    slug = record.get("slug")
    shown_slug = clean_text(slug)[0] if isinstance(slug, str) else "?"
    warnings = []
    for where, container, key in _text_slots(record):
        cleaned, markup, removed = clean_field(container[key])
        if markup or removed:
            container[key] = cleaned
            warnings.append(_warning(index, shown_slug, where, markup, removed))
    return warnings
