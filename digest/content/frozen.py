"""The digest's content as data: what the templates show and what is frozen with a digest.

Everything here is JSON-serialisable (pydantic), so a digest's content is stored once when it is
first planned and every rerun, preview and archive page renders from that same frozen copy.
Text fields hold raw, untrusted catalog text: escaping is the templates' job, never done here.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

_BLANK_LINE = re.compile(r"\n[^\S\n]*\n")


def stance(ship: int, skip: int) -> str:
    """ship, skip or split: what the panel's majority says."""
    if ship > skip:
        return "ship"
    if skip > ship:
        return "skip"
    return "split"


class ReviewCard(BaseModel):
    """One panel member's review, as the comparison page shows it."""

    reviewer: str
    verdict: str  # ship | skip
    quote: str = ""
    lens: str | None = None
    score: int | None = None


class ToolCard(BaseModel):
    """One side of a head-to-head, or one "also new" entry."""

    slug: str
    name: str
    vendor: str | None = None
    category: str
    tagline: str
    url: str | None = None  # http(s) only, checked at import
    pricing: str  # free | freemium | paid | unknown
    pricing_label: str  # "Free", "Freemium", "Paid", "Pricing unknown"
    ship_count: int = 0
    skip_count: int = 0
    ship_share: float | None = None  # 0..1; None: panel verdict pending
    panel_label: str  # "3 ship / 1 skip" or "Panel verdict pending"
    community_label: str  # "12 ship / 3 skip" or "No community votes yet"
    best_for: str | None = None
    quote: str | None = None  # the pull quote
    quote_reviewer: str | None = None
    quote_verdict: str | None = None  # ship | skip
    is_new: bool = True
    # Added later: content frozen before them loads with no reviews and no community counts.
    reviews: list[ReviewCard] = Field(default_factory=list)
    community_ship: int = 0
    community_skip: int = 0

    @property
    def panel_stance(self) -> str | None:
        """ship, skip or split; None while the panel has not reviewed the tool."""
        if self.ship_count + self.skip_count == 0:
            return None
        return stance(self.ship_count, self.skip_count)

    @property
    def community_share(self) -> float | None:
        """Community ship votes over all votes; None without votes."""
        total = self.community_ship + self.community_skip
        return self.community_ship / total if total else None


class PairCard(BaseModel):
    """A head-to-head: `a` is new this week, `b` is new too or an incumbent."""

    a: ToolCard
    b: ToolCard
    category: str
    verdict: str  # the one-line verdict, e.g. "Both ship; Code Llama 4 has the stronger panel"
    compare_path: str  # "/compare/<a>-vs-<b>", joined to DIGEST_SITE_URL by the renderer
    similarity: float = 0.0

    @property
    def shared_vendor(self) -> str | None:
        """The vendor both tools come from, when they share one (compared case-insensitively)."""
        va, vb = (self.a.vendor or "").strip(), (self.b.vendor or "").strip()
        return va if va and va.casefold() == vb.casefold() else None


class Exclusion(BaseModel):
    """A record of the week left out of the digest, and why."""

    slug: str
    reason: str


class DigestContent(BaseModel):
    """Everything one week's email says, before per-category filtering and rendering."""

    week: str  # "2026-W47"
    week_label: str  # "23–29 November 2026"
    subject: str
    preheader: str
    pairs: list[PairCard] = Field(default_factory=list)
    also_new: list[ToolCard] = Field(default_factory=list)
    excluded: list[Exclusion] = Field(default_factory=list)
    flags: list[str] = Field(default_factory=list)  # editor warnings, e.g. reused quotes
    categories: list[str] = Field(default_factory=list)  # categories the variant was cut for
    # The editor's note under the greeting (plain text) and whether they wrote the subject.
    intro: str | None = None
    subject_by_editor: bool = False

    @property
    def intro_paragraphs(self) -> list[list[str]]:
        """The editor's note as paragraphs (blank lines part them), each a list of its lines
        with their spacing tidied: a line break typed inside a paragraph is kept, so a list
        written one item a line stays one (joined, "- one\n- two" read "- one - two")."""
        if not self.intro:
            return []
        paragraphs = (
            [" ".join(line.split()) for line in chunk.splitlines() if line.strip()]
            for chunk in _BLANK_LINE.split(self.intro)
        )
        return [lines for lines in paragraphs if lines]

    @property
    def is_empty(self) -> bool:
        return not self.pairs and not self.also_new

    @property
    def new_tool_count(self) -> int:
        """Tools new this week: the new side(s) of each pair, and every "also new" one."""
        return sum(p.a.is_new + p.b.is_new for p in self.pairs) + len(self.also_new)
