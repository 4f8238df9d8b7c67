"""Turn a week's selection and pairs into the digest's content, and cut it per subscriber.

Labels and rules the email shows:

- A tool's panel stance is "ship" when more reviews say ship than skip, "skip" for the reverse,
  and "split" on a tie.
- Pull quote: among reviews with a non-blank quote that agree with the stance (any review on a
  split), the highest score wins (no score counts lowest); ties go to the reviewer name, then
  the quote text, alphabetically. No such review: no quote.
- Pair verdict: one line from the two stances, naming the stronger panel (higher ship share)
  when both agree, e.g. "Both ship; Code Llama 4 has the stronger panel".
- Subject: under 70 characters, never empty. With pairs it names the first (the best) pair and
  counts the rest; long names are shortened at a word boundary with an ellipsis. Without pairs
  it names a new tool; in an empty week it says so.
- Preheader: the head-to-heads in order, then the other new tools, at most 150 characters.

Text stays raw, untrusted catalog text; the templates escape it. Subjects and preheaders are
flattened to one line without control characters, since they also go into mail headers.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from datetime import timedelta
from zoneinfo import ZoneInfo

from digest.catalog.records import ToolRecord, category_key
from digest.content.frozen import (
    DigestContent,
    Exclusion,
    PairCard,
    ReviewCard,
    ToolCard,
    stance,
)
from digest.content.pairing import Pair, PairingResult
from digest.content.selection import WeekSelection
from digest.text import BIDI_CONTROLS

SUBJECT_LIMIT = 69
PREHEADER_LIMIT = 150

_PRICING_LABELS = {
    "free": "Free",
    "freemium": "Freemium",
    "paid": "Paid",
    "unknown": "Pricing unknown",
}
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
# Bidirectional overrides and isolates could reorder a subject line in a mail client.


# -- cards --------------------------------------------------------------------------------------


def pull_quote(tool: ToolRecord) -> tuple[str, str, str] | None:
    """(quote, reviewer, verdict) by the rule in the module docstring, or None."""
    majority = stance(tool.ship_count, tool.skip_count)
    candidates = [
        review
        for review in tool.reviews
        if review.quote.strip() and (majority == "split" or review.verdict == majority)
    ]
    if not candidates:
        return None
    best = min(
        candidates,
        key=lambda r: (-(r.score if r.score is not None else -1), r.reviewer.casefold(), r.quote),
    )
    return best.quote, best.reviewer, best.verdict


def community_label(tool: ToolRecord) -> str:
    ship, skip = tool.community_ship or 0, tool.community_skip or 0
    if ship + skip == 0:
        return "No community votes yet"
    return f"{ship} ship / {skip} skip"


def review_cards(tool: ToolRecord) -> list[ReviewCard]:
    """Every review, highest score first, then by reviewer: the comparison page lists them all."""
    ordered = sorted(
        tool.reviews,
        key=lambda r: (-(r.score if r.score is not None else -1), r.reviewer.casefold()),
    )
    return [
        ReviewCard(
            reviewer=r.reviewer, verdict=r.verdict, quote=r.quote, lens=r.lens, score=r.score
        )
        for r in ordered
    ]


def panel_label(tool: ToolRecord) -> str:
    if not tool.reviews:
        return "Panel verdict pending"
    return f"{tool.ship_count} ship / {tool.skip_count} skip"


def tool_card(tool: ToolRecord, *, is_new: bool) -> ToolCard:
    quote = pull_quote(tool)
    return ToolCard(
        slug=tool.slug,
        name=tool.name,
        vendor=tool.vendor,
        category=tool.category,
        tagline=tool.tagline,
        url=tool.url,
        pricing=tool.pricing,
        pricing_label=_PRICING_LABELS[tool.pricing],
        ship_count=tool.ship_count,
        skip_count=tool.skip_count,
        ship_share=tool.ship_share,
        panel_label=panel_label(tool),
        community_label=community_label(tool),
        best_for=tool.best_for,
        quote=quote[0] if quote else None,
        quote_reviewer=quote[1] if quote else None,
        quote_verdict=quote[2] if quote else None,
        is_new=is_new,
        reviews=review_cards(tool),
        community_ship=tool.community_ship or 0,
        community_skip=tool.community_skip or 0,
    )


def pair_verdict(a: ToolCard, b: ToolCard) -> str:
    """The one-line verdict of a head-to-head."""
    sa, sb = stance(a.ship_count, a.skip_count), stance(b.ship_count, b.skip_count)
    na, nb = one_line(a.name), one_line(b.name)
    share_a, share_b = a.ship_share or 0.0, b.ship_share or 0.0
    if sa == sb == "ship":
        if share_a == share_b:
            return "Both ship, with equally strong panels"
        return f"Both ship; {na if share_a > share_b else nb} has the stronger panel"
    if sa == sb == "skip":
        if share_a == share_b:
            return "Both skip, with equally unconvinced panels"
        return f"Both skip; {na if share_a > share_b else nb} comes closer"
    if sa == sb:
        return "The panel is split on both"
    if {sa, sb} == {"ship", "skip"}:
        shipped, skipped = (na, nb) if sa == "ship" else (nb, na)
        return f"Split decision: ship {shipped}, skip {skipped}"
    decided, split = (na, nb) if sb == "split" else (nb, na)
    decided_stance = sa if sb == "split" else sb
    if decided_stance == "ship":
        return f"{decided} ships; the panel is split on {split}"
    return f"{decided} is a skip; the panel is split on {split}"


def _pair_card(pair: Pair, new_slugs: set[str]) -> PairCard:
    a = tool_card(pair.a, is_new=True)
    b = tool_card(pair.b, is_new=pair.b.slug in new_slugs)
    return PairCard(
        a=a,
        b=b,
        category=pair.category,
        verdict=pair_verdict(a, b),
        compare_path=f"/compare/{pair.a.slug}-vs-{pair.b.slug}",
        similarity=pair.similarity,
    )


# -- subject and preheader ----------------------------------------------------------------------


def one_line(text: str) -> str:
    """Text flattened to one line, without control characters: a line break or tab is a
    space (dropped, "Evil Tool\nBcc" read "Evil ToolBcc")."""
    kept = "".join(
        ch
        for ch in text
        if ch.isspace() or (unicodedata.category(ch) != "Cc" and ch not in BIDI_CONTROLS)
    )
    return " ".join(kept.split())


def shorten(text: str, limit: int) -> str:
    """`text` in at most `limit` characters, cut at a word boundary when one is near."""
    if len(text) <= limit:
        return text
    if limit <= 1:
        return "…"[:limit]
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space >= limit // 2:
        cut = cut[:space]
    return cut.rstrip() + "…"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _name(card: ToolCard) -> str:
    return one_line(card.name) or card.slug


def _versus(a: str, b: str, budget: int) -> str:
    """ "a vs b" in at most `budget` characters, shortening the longer name first."""
    room = budget - len(" vs ")
    if len(a) + len(b) > room:
        half = room // 2
        if len(a) <= half:
            b = shorten(b, room - len(a))
        elif len(b) <= half:
            a = shorten(a, room - len(b))
        else:
            a, b = shorten(a, half), shorten(b, room - half)
    return f"{a} vs {b}"


def subject_line(pairs: Sequence[PairCard], also_new: Sequence[ToolCard]) -> str:
    """The subject, by the rule in the module docstring."""
    if pairs:
        more = len(pairs) - 1
        if more:
            tail = f", and {_plural(more, 'more verdict')}"
        elif also_new:
            tail = f", plus {_plural(len(also_new), 'new tool')}"
        else:
            tail = ": this week's verdict"
        first = pairs[0]
        return _versus(_name(first.a), _name(first.b), SUBJECT_LIMIT - len(tail)) + tail
    if also_new:
        head = "New this week: "
        more = len(also_new) - 1
        tail = f" and {_plural(more, 'more tool')}" if more else ""
        return head + shorten(_name(also_new[0]), SUBJECT_LIMIT - len(head) - len(tail)) + tail
    return "No new tools this week"


def preheader_line(pairs: Sequence[PairCard], also_new: Sequence[ToolCard]) -> str:
    parts: list[str] = []
    if pairs:
        listed = "; ".join(f"{_name(p.a)} vs {_name(p.b)}" for p in pairs)
        parts.append(f"{_plural(len(pairs), 'head-to-head')}: {listed}")
    if also_new:
        names = ", ".join(_name(card) for card in also_new)
        parts.append(f"{'Also new' if pairs else 'New this week'}: {names}")
    if not parts:
        return "Nothing new was added to the catalog this week"
    return shorten(". ".join(parts), PREHEADER_LIMIT)


def week_label(selection: WeekSelection, zone: ZoneInfo) -> str:
    """'23–29 November 2026', or across months/years '30 November – 6 December 2026'."""
    start, end = selection.week.window(zone)
    first = start.astimezone(zone).date()
    last = end.astimezone(zone).date() - timedelta(days=1)
    if first.year != last.year:
        return (
            f"{first.day} {_MONTHS[first.month - 1]} {first.year} – "
            f"{last.day} {_MONTHS[last.month - 1]} {last.year}"
        )
    if first.month != last.month:
        return (
            f"{first.day} {_MONTHS[first.month - 1]} – "
            f"{last.day} {_MONTHS[last.month - 1]} {last.year}"
        )
    return f"{first.day}–{last.day} {_MONTHS[last.month - 1]} {last.year}"


# -- content ------------------------------------------------------------------------------------


def _also_new_order(card: ToolCard) -> tuple[str, str, str]:
    return category_key(card.category), card.name.casefold(), card.slug


def build_content(
    selection: WeekSelection, pairing: PairingResult, *, site_url: str, zone: ZoneInfo
) -> DigestContent:
    """The week's content. `site_url` is not baked in: paths stay relative, so the frozen content
    still renders right after DIGEST_SITE_URL changes."""
    del site_url
    new_slugs = {tool.slug for tool in (*selection.new, *selection.pending)}
    pairs = [_pair_card(pair, new_slugs) for pair in pairing.pairs]
    listed: dict[str, ToolCard] = {}
    for tool in (*pairing.also_new, *selection.pending):
        listed.setdefault(tool.slug, tool_card(tool, is_new=True))
    also_new = sorted(listed.values(), key=_also_new_order)
    return DigestContent(
        week=str(selection.week),
        week_label=week_label(selection, zone),
        subject=subject_line(pairs, also_new),
        preheader=preheader_line(pairs, also_new),
        pairs=pairs,
        also_new=also_new,
        excluded=[Exclusion(slug=e.slug, reason=e.reason) for e in selection.excluded],
        flags=list(selection.flags),
    )


def filter_for_categories(
    content: DigestContent, categories: Sequence[str]
) -> DigestContent | None:
    """The variant for a subscriber of `categories` (empty: all), or None when nothing is left."""
    keys = {category_key(c) for c in categories} - {""}
    if not keys:
        return content
    pairs = [pair for pair in content.pairs if category_key(pair.category) in keys]
    also_new = [card for card in content.also_new if category_key(card.category) in keys]
    if not pairs and not also_new:
        return None
    return content.model_copy(
        update={
            "pairs": pairs,
            "also_new": also_new,
            "subject": content.subject
            if content.subject_by_editor
            else subject_line(pairs, also_new),
            "preheader": preheader_line(pairs, also_new),
            "categories": sorted(keys),
        }
    )
