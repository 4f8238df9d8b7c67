"""Composing the digest: labels, pull quotes, verdict lines, subject, and per-category variants."""

from __future__ import annotations

from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digest.catalog.records import ToolRecord, category_key
from digest.content.compose import (
    SUBJECT_LIMIT,
    build_content,
    filter_for_categories,
    pair_verdict,
    pull_quote,
    subject_line,
    tool_card,
)
from digest.content.frozen import DigestContent, PairCard, ToolCard
from digest.content.pairing import Pair, PairingResult, pair_tools
from digest.content.selection import select_week
from digest.weeks import IsoWeek
from tests.support.catalogs import WEEK, WEEK_START, catalogs, panel, review, tool

UTC_ZONE = ZoneInfo("UTC")
SITE = "https://verdicts.example.com"
OLD = WEEK_START - timedelta(days=30)


def _content(tools: list[ToolRecord], week: IsoWeek = WEEK) -> DigestContent:
    selection = select_week(tools, week=week, zone=UTC_ZONE)
    pairing = pair_tools(selection.new, selection.incumbents, previous_matchups=frozenset())
    return build_content(selection, pairing, site_url=SITE, zone=UTC_ZONE)


def _card(ship: int, skip: int, name: str = "Tool") -> ToolCard:
    return tool_card(
        tool(name.lower().replace(" ", "-"), name=name, reviews=panel(ship, skip)), is_new=True
    )


# -- cards ---------------------------------------------------------------------------------------


def test_card_labels_show_pricing_panel_split_and_community_votes() -> None:
    # The side-by-side facts read as the email shows them.
    card = tool_card(
        tool("t", pricing="freemium", reviews=panel(3, 1), community_ship=12, community_skip=3),
        is_new=True,
    )
    assert (card.pricing_label, card.panel_label, card.community_label) == (
        "Freemium",
        "3 ship / 1 skip",
        "12 ship / 3 skip",
    )
    assert card.ship_share == 0.75
    bare = tool_card(tool("u", pricing="unknown", reviews=()), is_new=False)
    assert (bare.pricing_label, bare.panel_label, bare.community_label) == (
        "Pricing unknown",
        "Panel verdict pending",
        "No community votes yet",
    )
    assert bare.ship_share is None and bare.is_new is False


def test_pull_quote_is_the_best_scored_review_agreeing_with_the_majority() -> None:
    # A higher-scored dissent never becomes the pull quote; blank quotes never do.
    reviews = (
        review("ship", score=70, quote="Solid.", who="Builder"),
        review("ship", score=90, quote="", who="Designer"),
        review("ship", score=85, quote="Best in class.", who="Researcher"),
        review("skip", score=99, quote="Overhyped.", who="Skeptic"),
    )
    assert pull_quote(tool("t", reviews=reviews)) == ("Best in class.", "Researcher", "ship")


def test_pull_quote_ties_break_by_reviewer_and_splits_take_any_verdict() -> None:
    # Equal scores go to the alphabetically first reviewer; a split panel quotes either side.
    tied = (
        review("skip", score=60, quote="Zed says no.", who="Zed"),
        review("skip", score=60, quote="Amy says no.", who="Amy"),
        review("ship", score=10, quote="Fine.", who="Bob"),
    )
    assert pull_quote(tool("t", reviews=tied)) == ("Amy says no.", "Amy", "skip")
    split = (
        review("ship", score=None, quote="Maybe.", who="A"),
        review("skip", score=40, quote="Not yet.", who="B"),
    )
    assert pull_quote(tool("s", reviews=split)) == ("Not yet.", "B", "skip")
    assert pull_quote(tool("q", reviews=(review("ship", quote="  "),))) is None


@pytest.mark.parametrize(
    ("a", "b", "verdict"),
    [
        ((3, 1), (2, 1), "Both ship; Alpha has the stronger panel"),
        ((2, 1), (3, 0), "Both ship; Beta has the stronger panel"),
        ((2, 0), (1, 0), "Both ship, with equally strong panels"),
        ((1, 3), (0, 2), "Both skip; Alpha comes closer"),
        ((0, 1), (0, 3), "Both skip, with equally unconvinced panels"),
        ((1, 2), (3, 1), "Split decision: ship Beta, skip Alpha"),
        ((2, 1), (1, 1), "Alpha ships; the panel is split on Beta"),
        ((1, 1), (0, 2), "Beta is a skip; the panel is split on Alpha"),
        ((1, 1), (2, 2), "The panel is split on both"),
    ],
)
def test_pair_verdict_line(a: tuple[int, int], b: tuple[int, int], verdict: str) -> None:
    # Each combination of panel stances gets its one-line verdict.
    assert pair_verdict(_card(*a, name="Alpha"), _card(*b, name="Beta")) == verdict


# -- content -------------------------------------------------------------------------------------


def test_content_for_a_week_with_pairs() -> None:
    # Pairs carry cards, category, verdict and compare path; also-new and exclusions follow.
    code = tool("code-llama-4", name="Code Llama 4", tags=("code",), reviews=panel(3, 1))
    mistral = tool("mistral-3-8b", name="Mistral 3 8B", tags=("code",), reviews=panel(2, 1))
    quiet = tool("quiet", name="Quiet Tool", category="Writing", reviews=())
    dup = tool("code-llama-4-copy", name="code llama 4", tags=("code",), pricing="unknown")
    content = _content([code, mistral, quiet, dup])
    assert content.week == "2026-W48"
    assert content.week_label == "23–29 November 2026"
    [pair] = content.pairs
    assert (pair.a.slug, pair.b.slug) == ("code-llama-4", "mistral-3-8b")
    assert pair.compare_path == "/compare/code-llama-4-vs-mistral-3-8b"
    assert pair.category == "Developer Tools"
    assert pair.verdict == "Both ship; Code Llama 4 has the stronger panel"
    assert pair.b.is_new
    assert [c.slug for c in content.also_new] == ["quiet"]
    assert content.also_new[0].panel_label == "Panel verdict pending"
    assert [(e.slug, e.reason) for e in content.excluded] == [
        ("code-llama-4-copy", "duplicate of code-llama-4")
    ]
    assert content.subject == "Code Llama 4 vs Mistral 3 8B, plus 1 new tool"
    assert content.preheader == (
        "1 head-to-head: Code Llama 4 vs Mistral 3 8B. Also new: Quiet Tool"
    )


def test_incumbent_side_is_marked_not_new() -> None:
    # The incumbent in a pair is shown as an established tool.
    fresh = tool("fresh", name="Fresh")
    veteran = tool("veteran", name="Veteran", added_at=OLD)
    [pair] = _content([fresh, veteran]).pairs
    assert (pair.a.is_new, pair.b.is_new) == (True, False)


def test_subject_counts_more_verdicts() -> None:
    # With several pairs the subject names the best one and counts the rest.
    tools = [
        tool(f"t{i}", name=f"T{i}", category=c)
        for i, c in enumerate(["A", "A", "B", "B", "C", "C"])
    ]
    content = _content(tools)
    assert len(content.pairs) == 3
    first = content.pairs[0]
    assert content.subject == f"{first.a.name} vs {first.b.name}, and 2 more verdicts"
    assert content.preheader.startswith(f"3 head-to-heads: {first.a.name} vs {first.b.name}; ")


def test_subject_without_pairs_and_for_an_empty_week() -> None:
    # No pairs: name a new tool; nothing new: still a subject.
    content = _content([tool("solo", name="Solo Tool"), tool("other", name="Other", category="X")])
    assert content.pairs == []
    assert content.subject == "New this week: Solo Tool and 1 more tool"
    empty = _content([])
    assert empty.subject == "No new tools this week" and empty.is_empty
    assert empty.preheader


def test_long_names_are_shortened_at_word_boundaries() -> None:
    # Very long names still give a subject under 70 characters ending its names with an ellipsis.
    a = tool("a", name="The Extraordinarily Long Named Autonomous Coding Assistant Platform Pro")
    b = tool("b", name="Short One")
    content = _content([a, b])
    assert len(content.subject) <= SUBJECT_LIMIT
    assert "…" in content.subject and "Short One" in content.subject
    assert content.subject.endswith(": this week's verdict")


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200), st.text(max_size=200), st.integers(0, 40), st.integers(0, 3))
def test_subject_is_never_empty_never_long_and_one_line(
    name_a: str, name_b: str, more_pairs: int, also: int
) -> None:
    # Whatever the catalog text, the subject is 1..69 characters on one line.
    def card(slug: str, name: str) -> ToolCard:
        return tool_card(tool(slug, name=name or "x"), is_new=True)

    a, b = card("a", name_a), card("b", name_b)
    pair = PairCard(a=a, b=b, category="C", verdict="v", compare_path="/compare/a-vs-b")
    for pairs in ([pair] * (more_pairs + 1), []):
        subject = subject_line(pairs, [a] * also)
        assert 0 < len(subject) <= SUBJECT_LIMIT
        assert "\n" not in subject and "\r" not in subject
        assert all(ch >= " " for ch in subject)


def test_a_line_break_in_a_name_is_a_space_in_the_one_line_texts() -> None:
    # Dropped, "Evil Tool\nBcc: x" read "Evil ToolBcc: x" in the subject.
    content = _content([tool("x", name="Evil Tool\nBcc:\tx"), tool("y", name="Y")])
    assert "Evil Tool Bcc: x" in content.subject


def test_text_stays_raw_for_the_templates_to_escape() -> None:
    # Compose never escapes: the templates do, exactly once.
    evil = "<script>alert(1)</script> & Co"
    content = _content([tool("x", name=evil, tagline=evil), tool("y", name="Y")])
    assert content.pairs[0].a.name == evil or content.pairs[0].b.name == evil
    assert evil in content.subject


def test_week_labels_across_months_and_years() -> None:
    # A week spanning two months or two years names both.
    assert _content([], IsoWeek(2026, 49)).week_label == "30 November – 6 December 2026"
    assert _content([], IsoWeek(2026, 53)).week_label == "28 December 2026 – 3 January 2027"


@settings(max_examples=40, deadline=None)
@given(catalogs())
def test_content_survives_a_json_round_trip(catalog: list[ToolRecord]) -> None:
    # The frozen copy stored with a digest renders exactly like the freshly composed content.
    content = _content(catalog)
    assert DigestContent.model_validate_json(content.model_dump_json()) == content


# -- per-category variants -----------------------------------------------------------------------


def _mixed_week() -> DigestContent:
    return _content(
        [
            tool("dev-a", name="Dev A", category="Developer Tools"),
            tool("dev-b", name="Dev B", category="Developer Tools"),
            tool("writer", name="Writer", category="Writing"),
            tool("painter", name="Painter", category="Image Generation", reviews=()),
        ]
    )


def test_no_categories_means_the_whole_digest() -> None:
    # A subscriber without categories gets the content as it is.
    content = _mixed_week()
    assert filter_for_categories(content, []) is content


def test_a_variant_keeps_only_its_categories_case_insensitively() -> None:
    # "writing" picks the Writing tool only, with a subject of its own.
    content = _mixed_week()
    variant = filter_for_categories(content, [" WRITING "])
    assert variant is not None
    assert variant.pairs == []
    assert [c.slug for c in variant.also_new] == ["writer"]
    assert variant.subject == "New this week: Writer"
    assert variant.categories == ["writing"]
    both = filter_for_categories(content, ["developer tools", "image generation"])
    assert both is not None
    assert [p.compare_path for p in both.pairs] == ["/compare/dev-a-vs-dev-b"]
    assert [c.slug for c in both.also_new] == ["painter"]
    assert both.subject == "Dev A vs Dev B, plus 1 new tool"


def test_a_variant_with_nothing_left_is_none() -> None:
    # A subscriber whose categories had nothing new this week is skipped.
    assert filter_for_categories(_mixed_week(), ["Audio"]) is None


@settings(max_examples=40, deadline=None)
@given(catalogs(), st.lists(st.sampled_from(["developer tools", "WRITING", "Audio"]), max_size=2))
def test_variants_hold_only_their_categories(catalog: list[ToolRecord], wanted: list[str]) -> None:
    # Every pair and tool of a variant is in one of its categories, and none is lost.
    content = _content(catalog)
    variant = filter_for_categories(content, wanted)
    keys = {category_key(w) for w in wanted}
    if not keys:
        assert variant is content
        return
    kept_pairs = [p for p in content.pairs if category_key(p.category) in keys]
    kept_new = [c for c in content.also_new if category_key(c.category) in keys]
    if not kept_pairs and not kept_new:
        assert variant is None
        return
    assert variant is not None
    assert variant.pairs == kept_pairs and variant.also_new == kept_new
    assert variant.subject and len(variant.subject) <= SUBJECT_LIMIT


def test_pairs_keep_the_pairing_order_and_similarity() -> None:
    # Compose shows pairs in the order pairing ranked them.
    one, two = tool("one", name="One"), tool("two", name="Two")
    selection = select_week([one, two], week=WEEK, zone=UTC_ZONE)
    pairing = PairingResult(pairs=(Pair(two, one, "Developer Tools", 0.25),), also_new=())
    content = build_content(selection, pairing, site_url=SITE, zone=UTC_ZONE)
    assert content.pairs[0].compare_path == "/compare/two-vs-one"
    assert content.pairs[0].similarity == 0.25
