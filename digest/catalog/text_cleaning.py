"""Catalog text at the door: the characters no email or page should carry, removed and named.

An unattended weekly feed must not stop for one stray byte, so the characters `digest.text`
rules out are removed from every text field of a record, with a warning naming record and
field, rather than refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from digest.text import clean_text

# The text fields of a tool and of a review, as named in the catalog format.
TOOL_TEXT_FIELDS = ("name", "tagline", "category", "vendor", "best_for", "description", "license")
REVIEW_TEXT_FIELDS = ("reviewer", "lens", "quote")


def _warning(index: int, slug: str, where: str, removed: list[str]) -> str:
    return (
        f"record {index} (slug {slug!r}): field {where}: removed {', '.join(removed)} "
        "(control, noncharacter, surrogate or bidirectional characters)"
    )


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


def clean_record(index: int, record: dict[str, Any]) -> list[str]:
    """Clean a raw record's text fields in place; one warning per field that lost characters."""
    slug = record.get("slug")
    shown_slug = clean_text(slug)[0] if isinstance(slug, str) else "?"
    warnings = []
    for where, container, key in _text_slots(record):
        cleaned, removed = clean_text(container[key])
        if removed:
            container[key] = cleaned
            warnings.append(_warning(index, shown_slug, where, removed))
    return warnings
