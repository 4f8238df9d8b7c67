"""The categories subscribers choose from: the catalog's, tidied, and which choices it lacks.

Two names are one category when their `category_key` (digest/catalog/records.py) is equal;
everything here compares through it and nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

from sqlalchemy import select
from sqlmodel import Session, col

from digest.catalog.records import category_key
from digest.models import Tool

# A list names a few dozen categories a million times: each is keyed once.
_key = lru_cache(maxsize=4096)(category_key)
# How many subscribers a warning names before it says "and N more".
_NAMED_IN_WARNING = 10


def clean_categories(names: Iterable[str]) -> list[str]:
    """Whitespace tidied, blanks and repeats (by key) dropped, sorted; the first spelling stays."""
    seen: dict[str, str] = {}
    for name in names:
        tidy = " ".join(name.split())
        if tidy:
            seen.setdefault(category_key(tidy), tidy)
    return [seen[key] for key in sorted(seen)]


def catalog_categories(session: Session) -> list[str]:
    """Every category in the catalog, once each however it is capitalised, sorted."""
    names = session.connection().execute(select(col(Tool.category)).distinct()).scalars()
    # Sorted by code point first, so the spelling kept is the same on every database.
    return clean_categories(sorted(str(n) for n in names if n))


def unknown_categories(chosen: Sequence[str], catalog: Sequence[str]) -> list[str]:
    """The chosen categories that no catalog category matches, in the order chosen."""
    known = {_key(name) for name in catalog}
    return [name for name in chosen if _key(name) not in known]


def unknown_category_warnings(
    chosen_by: Iterable[tuple[str, Iterable[str]]], catalog: list[str]
) -> list[str]:
    """One warning per category no catalog category matches, naming who chose it.

    `chosen_by` pairs who (a line, an address) with the categories they chose that are unknown.
    """
    spelling: dict[str, str] = {}
    choosers: dict[str, list[str]] = {}  # the first few who chose it: all a warning names
    counts: dict[str, int] = {}
    for who, categories in chosen_by:
        for name in categories:
            key = _key(name)
            spelling.setdefault(key, name)
            first = choosers.setdefault(key, [])
            if len(first) < _NAMED_IN_WARNING:
                first.append(who)
            counts[key] = counts.get(key, 0) + 1
    if not spelling:
        return []
    known = ", ".join(catalog) if catalog else "none yet (import the catalog first)"
    warnings = []
    for key, name in spelling.items():
        named = ", ".join(choosers[key])
        extra = counts[key] - _NAMED_IN_WARNING
        more = f" and {extra} more" if extra > 0 else ""
        warnings.append(
            f"category {name!r} is not in the catalog, so no digest includes it (chosen by "
            f"{named}{more}). Known categories: {known}. Correct the spelling (case does not "
            "matter), or import a catalog that has it."
        )
    return warnings
