"""The categories a subscriber can choose: the catalog's, plus any they already chose."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlmodel import Session, col

from digest.models import Tool


@dataclass(frozen=True)
class Choice:
    name: str
    checked: bool


def catalog_categories(session: Session) -> list[str]:
    """Every category in the catalog, once each however it is capitalised, sorted."""
    names = session.connection().execute(select(col(Tool.category)).distinct()).scalars()
    # Sorted by code point first, so the spelling kept is the same on every database.
    return _unique(sorted(str(n) for n in names if n))


def _unique(names: Iterable[str]) -> list[str]:
    seen: dict[str, str] = {}
    for name in names:
        tidy = " ".join(name.split())
        if tidy:
            seen.setdefault(tidy.casefold(), tidy)
    return sorted(seen.values(), key=str.casefold)


def offered(catalog: Sequence[str], chosen: Sequence[str]) -> list[Choice]:
    """The boxes to show: a chosen category the catalog no longer has stays, ticked."""
    ticked = {c.casefold() for c in chosen}
    return [Choice(name, name.casefold() in ticked) for name in _unique([*catalog, *chosen])]


def pick(choices: Sequence[Choice], submitted: Iterable[str]) -> list[str]:
    """The submitted names that are offered, in the offered spelling; others are dropped."""
    wanted = {" ".join(s.split()).casefold() for s in submitted}
    return [c.name for c in choices if c.name.casefold() in wanted]
