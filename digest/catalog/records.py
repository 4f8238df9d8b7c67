"""Plain, immutable records of catalog tools: what selection and pairing reason about.

These carry no database identity, so pairing decisions cannot depend on row ids or import order.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

Pricing = Literal["free", "freemium", "paid", "unknown"]
Verdict = Literal["ship", "skip"]


@dataclass(frozen=True)
class ReviewRecord:
    """One panel member's verdict on a tool."""

    reviewer: str
    verdict: Verdict
    quote: str = ""
    lens: str | None = None
    score: int | None = None


@dataclass(frozen=True)
class ToolRecord:
    """A catalog tool as imported; every text field is untrusted."""

    slug: str
    name: str
    category: str
    tagline: str
    added_at: datetime
    vendor: str | None = None
    description: str | None = None
    url: str | None = None
    pricing: Pricing = "unknown"
    license: str | None = None
    open_weights: bool | None = None
    tags: tuple[str, ...] = ()
    best_for: str | None = None
    community_ship: int | None = None
    community_skip: int | None = None
    reviews: tuple[ReviewRecord, ...] = field(default=())

    @property
    def ship_count(self) -> int:
        return sum(1 for r in self.reviews if r.verdict == "ship")

    @property
    def skip_count(self) -> int:
        return sum(1 for r in self.reviews if r.verdict == "skip")

    @property
    def ship_share(self) -> float | None:
        """Panel ship reviews over all reviews; None without reviews."""
        if not self.reviews:
            return None
        return self.ship_count / len(self.reviews)


def category_key(category: str) -> str:
    """The one rule by which two category names are the same category, everywhere.

    Compatibility forms, runs of whitespace and case do not count (NFKC, then whitespace folded,
    then casefold): "Developer  Tools", "developer tools" and full-width letters all match.
    """
    return " ".join(unicodedata.normalize("NFKC", category).split()).casefold()
