"""The category boxes of the web forms: the catalog's categories, plus any already chosen."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from digest.audience.categories import clean_categories
from digest.catalog.records import category_key


@dataclass(frozen=True)
class Choice:
    name: str
    checked: bool


def offered(catalog: Sequence[str], chosen: Sequence[str]) -> list[Choice]:
    """The boxes to show: a chosen category the catalog no longer has stays, ticked."""
    ticked = {category_key(c) for c in chosen}
    return [
        Choice(name, category_key(name) in ticked) for name in clean_categories([*catalog, *chosen])
    ]


def pick(choices: Sequence[Choice], submitted: Iterable[str]) -> list[str]:
    """The submitted names that are offered, in the offered spelling; others are dropped."""
    wanted = {category_key(s) for s in submitted}
    return [c.name for c in choices if category_key(c.name) in wanted]


def not_offered(choices: Sequence[Choice], submitted: Iterable[str]) -> list[str]:
    """The submitted names no box offers (a forged form, or one older than the catalog)."""
    known = {category_key(c.name) for c in choices}
    return [s for s in dict.fromkeys(submitted) if category_key(s) not in known]


def not_offered_sentence(unknown: Sequence[str]) -> str:
    """What a form that named categories no box offers is told (the first five, cut short)."""
    names = ", ".join(f"“{name[:80]}”" for name in unknown[:5])
    return f"We send no category called {names}. Tick the boxes below and send the form again."
