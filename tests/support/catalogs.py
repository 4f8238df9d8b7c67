"""Builders and hypothesis strategies for catalogs of ToolRecord values.

The pools are small on purpose, so generated catalogs are full of duplicates, shared categories
spelled differently, shared tags, reused quotes and records on the exact edges of a week.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any, cast
from zoneinfo import ZoneInfo

from hypothesis import strategies as st

from digest.catalog.records import Pricing, ReviewRecord, ToolRecord, Verdict
from digest.weeks import IsoWeek

WEEK = IsoWeek(2026, 48)
WEEK_START, WEEK_END = WEEK.window(ZoneInfo("UTC"))
MICRO = timedelta(microseconds=1)

_counter = itertools.count(1)

NAMES = ["Code Llama 4", "code-llama 4", "Mistral 3 8B", "Gemma Coder", "Phi 5", "Qwen Writer"]
VENDORS = [None, "Meta", "META ", "Mistral AI", "Google"]
CATEGORIES = ["Developer Tools", "developer  tools", " Writing", "writing", "Image Generation"]
TAGS = ["code", "Code", "agents", "chat", "vision", "open"]
LICENSES = [None, "MIT", "mit", "Apache-2.0", "Llama 4 Community License"]
QUOTES = ["", "Fast and sharp.", "fast and  SHARP.", "Not ready yet.", "Great for agents."]
REVIEWERS = ["Builder", "Skeptic", "Designer", "Researcher"]

# Instants around the week's edges, plus ordinary ones on both sides.
EDGE_INSTANTS = [
    WEEK_START - timedelta(days=30),
    WEEK_START - MICRO,
    WEEK_START,
    WEEK_START + timedelta(days=3, hours=5),
    WEEK_END - MICRO,
    WEEK_END,
    WEEK_END + timedelta(days=2),
]


def review(
    verdict: Verdict = "ship", *, score: int | None = 70, quote: str = "", who: str = "Builder"
) -> ReviewRecord:
    return ReviewRecord(reviewer=who, verdict=verdict, score=score, quote=quote)


def panel(ship: int, skip: int) -> tuple[ReviewRecord, ...]:
    """A panel of `ship` ship and `skip` skip reviews with distinct quotes."""
    made = [review("ship", quote=f"ship quote {next(_counter)}") for _ in range(ship)]
    made += [review("skip", quote=f"skip quote {next(_counter)}") for _ in range(skip)]
    return tuple(made)


def tool(slug: str | None = None, **overrides: Any) -> ToolRecord:
    """A reviewed tool added mid-week in the Developer Tools category; override any field."""
    slug = slug or f"tool-{next(_counter)}"
    fields: dict[str, Any] = {
        "slug": slug,
        "name": slug.replace("-", " ").title(),
        "vendor": "Example Vendor",
        "category": "Developer Tools",
        "tagline": f"The tagline of {slug}",
        "added_at": WEEK_START + timedelta(days=2),
        "pricing": "free",
        "tags": ("code",),
        "reviews": panel(2, 1),
    }
    fields.update(overrides)
    return ToolRecord(**fields)


# Several fields drawn at once: fewer draws keep generation fast enough for many examples.
_IDENTITIES = st.sampled_from(list(itertools.product(NAMES, VENDORS)))
_TERMS = st.sampled_from(
    list(itertools.product(["free", "freemium", "paid", "unknown"], LICENSES, [None, True, False]))
)
_EXTRAS = st.sampled_from(
    list(
        itertools.product(
            ["A tagline", " ", "<b>bold</b>"], [None, "Teams"], [None, 0, 7], [None, 2]
        )
    )
)
_REVIEW = st.builds(
    ReviewRecord,
    reviewer=st.sampled_from(REVIEWERS),
    verdict=st.sampled_from(["ship", "skip"]),
    score=st.sampled_from([None, 0, 50, 50, 90, 100]),
    quote=st.sampled_from(QUOTES),
)


@st.composite
def records(
    draw: st.DrawFn,
    slug: str,
    *,
    when: st.SearchStrategy[datetime] | None = None,
    categories: list[str] = CATEGORIES,
    reviewed: bool = False,
) -> ToolRecord:
    name, vendor = draw(_IDENTITIES)
    pricing, license_name, open_weights = draw(_TERMS)
    tagline, best_for, ships, skips = draw(_EXTRAS)
    return ToolRecord(
        slug=slug,
        name=name,
        vendor=vendor,
        category=draw(st.sampled_from(categories)),
        tagline=tagline,
        added_at=draw(st.sampled_from(EDGE_INSTANTS) if when is None else when),
        pricing=cast(Pricing, pricing),
        license=license_name,
        open_weights=open_weights,
        tags=tuple(draw(st.lists(st.sampled_from(TAGS), max_size=3))),
        best_for=best_for,
        community_ship=ships,
        community_skip=skips,
        reviews=tuple(draw(st.lists(_REVIEW, min_size=int(reviewed), max_size=3))),
    )


SLUGS = st.lists(
    st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=8),
    unique=True,
    max_size=14,
)


@st.composite
def catalogs(draw: st.DrawFn) -> list[ToolRecord]:
    """A whole catalog: unique slugs, any mix of new, old, future and duplicate records."""
    return [draw(records(slug)) for slug in draw(SLUGS)]


@st.composite
def pairing_inputs(
    draw: st.DrawFn,
    *,
    min_new: int = 0,
    max_new: int = 12,
    max_old: int = 8,
    categories: list[str] = CATEGORIES,
    reviewed: bool = False,
) -> tuple[list[ToolRecord], list[ToolRecord], frozenset[frozenset[str]]]:
    """New tools, incumbents (distinct slugs) and a random record of earlier match-ups."""
    slugs = draw(
        st.lists(
            st.text("abcdefghij", min_size=1, max_size=5),
            unique=True,
            min_size=min_new,
            max_size=max_new + max_old,
        )
    )
    cut = draw(st.integers(min_new, min(len(slugs), max_new)))
    new = [
        draw(records(s, when=st.just(WEEK_START), categories=categories, reviewed=reviewed))
        for s in slugs[:cut]
    ]
    old = [
        draw(records(s, when=st.just(WEEK_START - timedelta(days=9)), categories=categories))
        for s in slugs[cut:]
    ]
    possible = [frozenset(p) for p in itertools.combinations(slugs, 2)]
    previous = (
        frozenset(draw(st.lists(st.sampled_from(possible), max_size=8)))
        if possible
        else frozenset()
    )
    return new, old, previous
