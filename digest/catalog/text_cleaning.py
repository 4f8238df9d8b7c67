"""Catalog text at the door: the characters no email or page should carry, removed and named.

An unattended weekly feed must not stop for one stray byte, so these characters are removed
(with a warning naming record and field) rather than refused: C0 and C1 control characters
other than tab and newline (NUL included), Unicode noncharacters (U+FDD0..U+FDEF and the last
two code points of every plane), lone surrogates, and the bidirectional controls (RLO, LRO,
LRE, RLE, PDF, LRI, RLI, FSI, PDI) that would reorder a subject, a page or a To name.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_KEPT_CONTROLS = frozenset("\t\n")
# The text fields of a tool and of a review, as named in the catalog format.
TOOL_TEXT_FIELDS = ("name", "tagline", "category", "vendor", "best_for", "description", "license")
REVIEW_TEXT_FIELDS = ("reviewer", "lens", "quote")


def is_removed(character: str) -> bool:
    """Whether the character is one the catalog door removes (rule: module docstring)."""
    point = ord(character)
    if character in _KEPT_CONTROLS:
        return False
    if point < 0x20 or 0x7F <= point <= 0x9F:
        return True
    if 0xD800 <= point <= 0xDFFF or 0xFDD0 <= point <= 0xFDEF:
        return True
    if point & 0xFFFE == 0xFFFE:
        return True
    return character in BIDI_CONTROLS


def clean_text(text: str) -> tuple[str, list[str]]:
    """The text without removed characters, and each removed one as U+XXXX (sorted, once)."""
    removed = sorted({f"U+{ord(ch):04X}" for ch in text if is_removed(ch)})
    if not removed:
        return text, []
    return "".join(ch for ch in text if not is_removed(ch)), removed


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
