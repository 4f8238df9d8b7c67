"""Selection: which records are the week's new tools, which are duplicates, and what is flagged."""

from __future__ import annotations

import random
from collections import Counter
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digest.catalog.records import ToolRecord
from digest.content.pairing import pair_tools
from digest.content.selection import WeekSelection, identity, normalized_name, select_week
from tests.support.catalogs import WEEK, WEEK_END, WEEK_START, catalogs, review, tool

PROPERTY = settings(max_examples=80, deadline=None)
OLD = WEEK_START - timedelta(days=20)


def _select(tools: list[ToolRecord]) -> WeekSelection:
    return select_week(tools, week=WEEK, zone=ZoneInfo("UTC"))


def _in_week(tool: ToolRecord) -> bool:
    return WEEK_START <= tool.added_at < WEEK_END


@PROPERTY
@given(catalogs())
def test_every_record_of_the_week_lands_in_exactly_one_place(catalog: list[ToolRecord]) -> None:
    # Each record added in the week is new, pending, excluded or a re-listed incumbent: once.
    selection = _select(catalog)
    places = Counter(t.slug for t in (*selection.new, *selection.pending))
    places.update(e.slug for e in selection.excluded)
    places.update(t.slug for t in selection.incumbents if _in_week(t))
    assert places == Counter(t.slug for t in catalog if _in_week(t))


@PROPERTY
@given(catalogs())
def test_sets_hold_the_right_records(catalog: list[ToolRecord]) -> None:
    # New tools have reviews, pending ones do not, both were added in the week; incumbents'
    # tools were first listed before it; nothing added after the week appears anywhere.
    selection = _select(catalog)
    assert all(t.reviews and _in_week(t) for t in selection.new)
    assert all(not t.reviews and _in_week(t) for t in selection.pending)
    first_listed: dict[tuple[str, str], datetime] = {}
    for t in catalog:
        if t.added_at < WEEK_END and t.name.strip() and t.tagline.strip():
            key = identity(t)
            first_listed[key] = min(first_listed.get(key, t.added_at), t.added_at)
    assert all(first_listed[identity(t)] < WEEK_START for t in selection.incumbents)
    later = {t.slug for t in catalog if t.added_at >= WEEK_END}
    shown = {t.slug for t in (*selection.new, *selection.pending, *selection.incumbents)}
    assert not later & (shown | {e.slug for e in selection.excluded})


@PROPERTY
@given(catalogs())
def test_one_record_per_tool_survives(catalog: list[ToolRecord]) -> None:
    # No two kept records share a normalised name and vendor; each dropped duplicate names a kept
    # record of the same tool.
    selection = _select(catalog)
    kept = [*selection.new, *selection.pending, *selection.incumbents]
    assert len({identity(t) for t in kept}) == len(kept)
    by_slug = {t.slug: t for t in catalog}
    kept_slugs = {t.slug for t in kept}
    for exclusion in selection.excluded:
        if exclusion.reason.startswith("duplicate of "):
            target = exclusion.reason.removeprefix("duplicate of ")
            assert target in kept_slugs
            assert identity(by_slug[target]) == identity(by_slug[exclusion.slug])


@PROPERTY
@given(catalogs(), st.randoms(use_true_random=False))
def test_selection_is_deterministic_under_shuffling(
    catalog: list[ToolRecord], rnd: random.Random
) -> None:
    # The same catalog gives the same selection whatever the order of its records.
    first = _select(catalog)
    rnd.shuffle(catalog)
    assert _select(catalog) == first


@PROPERTY
@given(catalogs())
def test_week_tools_are_accounted_for_after_pairing(catalog: list[ToolRecord]) -> None:
    # After pairing, every record of the week is in exactly one of: a pair (as a new tool),
    # also_new, pending, excluded, or the incumbents; duplicates are never paired together.
    selection = _select(catalog)
    result = pair_tools(selection.new, selection.incumbents, previous_matchups=frozenset())
    new_slugs = {t.slug for t in selection.new}
    places = Counter(s for p in result.pairs for s in (p.a.slug, p.b.slug) if s in new_slugs)
    places.update(t.slug for t in result.also_new)
    places.update(t.slug for t in selection.pending)
    places.update(e.slug for e in selection.excluded)
    places.update(t.slug for t in selection.incumbents if _in_week(t))
    assert places == Counter(t.slug for t in catalog if _in_week(t))
    for pair in result.pairs:
        assert identity(pair.a) != identity(pair.b)


# -- the week's edges ----------------------------------------------------------------------------


def test_week_window_is_inclusive_at_start_and_exclusive_at_end() -> None:
    # Monday 00:00 belongs to its week; the next Monday 00:00 belongs to the next week.
    edge = [
        tool("before", added_at=WEEK_START - timedelta(microseconds=1)),
        tool("first", added_at=WEEK_START),
        tool("last", added_at=WEEK_END - timedelta(microseconds=1)),
        tool("next", added_at=WEEK_END),
    ]
    selection = _select(edge)
    assert [t.slug for t in selection.new] == ["first", "last"]
    assert [t.slug for t in selection.incumbents] == ["before"]


# -- de-duplication ------------------------------------------------------------------------------


def test_names_normalise_case_spacing_and_punctuation() -> None:
    # "Code-Llama  4" and "code llama 4" are one name; "C++" and "C#" stay apart.
    assert normalized_name("Code-Llama  4") == normalized_name(" code llama 4 ")
    assert normalized_name("ＣＯＤＥ") == normalized_name("code")
    assert normalized_name("C++") != normalized_name("C#")


def test_the_most_complete_record_is_kept() -> None:
    # Of two records of one tool, the one with more fields filled wins, even if older.
    rich = tool("rich", name="Code Llama 4", vendor="Meta", best_for="Agents", license="MIT")
    thin = tool("thin", name="code llama 4", vendor="meta", added_at=WEEK_START + timedelta(days=4))
    selection = _select([thin, rich])
    assert [t.slug for t in selection.new] == ["rich"]
    assert [(e.slug, e.reason) for e in selection.excluded] == [("thin", "duplicate of rich")]


def test_equally_complete_duplicates_keep_the_newest() -> None:
    # With the same fields filled, the newer record wins.
    older = tool("older", name="Gemma", added_at=WEEK_START + timedelta(days=1))
    newer = tool("newer", name="Gemma", added_at=WEEK_START + timedelta(days=2))
    selection = _select([older, newer])
    assert [t.slug for t in selection.new] == ["newer"]
    assert selection.excluded[0].reason == "duplicate of newer"


def test_an_incumbent_relisted_this_week_is_not_new() -> None:
    # A tool first added before the week stays an incumbent under a new, sparser slug.
    old = tool("code-llama-4", name="Code Llama 4", added_at=OLD)
    again = tool(
        "code-llama-4-v2",
        name="Code Llama 4",
        pricing="unknown",
        added_at=WEEK_START + timedelta(days=1),
    )
    selection = _select([old, again])
    assert selection.new == () and selection.pending == ()
    assert [t.slug for t in selection.incumbents] == ["code-llama-4"]
    assert [(e.slug, e.reason) for e in selection.excluded] == [
        ("code-llama-4-v2", "duplicate of code-llama-4")
    ]
    assert selection.flags == ()


def test_a_richer_relisting_is_kept_as_the_incumbent_and_flagged() -> None:
    # When the re-listing is the better record it is shown, as an incumbent, with an editor flag,
    # and earlier match-ups under the old slug still count.
    old = tool("old-slug", name="Code Llama 4", added_at=OLD, reviews=())
    again = tool("new-slug", name="Code Llama 4", license="MIT", best_for="Agents")
    selection = _select([old, again])
    assert selection.new == ()
    assert [t.slug for t in selection.incumbents] == ["new-slug"]
    assert any("new-slug re-lists old-slug" in flag for flag in selection.flags)
    previous = frozenset({frozenset(("old-slug", "rival"))})
    assert selection.canonical_matchups(previous) == {frozenset(("new-slug", "rival"))}


def test_vendor_is_part_of_identity() -> None:
    # Same name from different vendors: two tools, both new.
    one = tool("one", name="Assistant", vendor="Acme")
    two = tool("two", name="Assistant", vendor="Globex")
    assert [t.slug for t in _select([one, two]).new] == ["one", "two"]


# -- content checks ------------------------------------------------------------------------------


def test_tools_without_reviews_are_pending_not_new() -> None:
    # No reviews means no panel verdict: the tool is pending, never offered for pairing.
    selection = _select([tool("quiet", reviews=()), tool("loud")])
    assert [t.slug for t in selection.pending] == ["quiet"]
    assert [t.slug for t in selection.new] == ["loud"]


@pytest.mark.parametrize(
    ("field", "reason"),
    [("name", "no name"), ("tagline", "no tagline"), ("category", "no category")],
)
def test_blank_required_text_is_excluded_with_a_reason(field: str, reason: str) -> None:
    # A record that cannot be shown honestly is left out and says why.
    selection = _select([tool("blank", **{field: "  \n"})])
    assert [(e.slug, e.reason) for e in selection.excluded] == [("blank", reason)]


def test_reused_quotes_are_flagged_not_excluded() -> None:
    # The same quote on two different tools is an editor warning; both tools stay.
    shared = "Fast, sharp and   cheap."
    one = tool("one", name="One", reviews=(review(quote=shared),))
    two = tool("two", name="Two", reviews=(review(quote="fast, SHARP and cheap."),))
    selection = _select([one, two])
    assert [t.slug for t in selection.new] == ["one", "two"]
    assert len(selection.flags) == 1
    assert "one, two" in selection.flags[0] and "word for word" in selection.flags[0]


def test_quotes_shared_by_duplicates_of_one_tool_are_not_flagged() -> None:
    # Duplicate records naturally repeat their quotes; only different tools count.
    quote = (review(quote="Same words."),)
    selection = _select(
        [tool("a", name="Same", reviews=quote), tool("b", name="same", reviews=quote)]
    )
    assert selection.flags == ()


def test_quote_reuse_between_old_tools_only_is_not_flagged_again() -> None:
    # A reuse among incumbents alone is old news; a new tool repeating it is flagged.
    quote = (review(quote="Old words."),)
    old = [
        tool("x", name="X", added_at=OLD, reviews=quote),
        tool("y", name="Y", added_at=OLD, reviews=quote),
    ]
    assert _select(old).flags == ()
    flags = _select([*old, tool("z", name="Z", reviews=quote)]).flags
    assert len(flags) == 1 and "x, y, z" in flags[0]


def test_conflicting_pricing_among_duplicates_is_flagged() -> None:
    # Duplicates that disagree on pricing are flagged, naming each record's pricing.
    a = tool("a", name="Phi 5", pricing="free", license="MIT")
    b = tool("b", name="Phi 5", pricing="paid")
    selection = _select([a, b])
    assert any("a: free, b: paid" in flag for flag in selection.flags)


def test_duplicate_slugs_are_refused() -> None:
    # Slugs are the catalog's key; two records with one slug are a caller bug.
    with pytest.raises(ValueError, match="share the slug"):
        _select([tool("x"), tool("x", name="Other")])


def test_zone_moves_the_window() -> None:
    # The same instant is in different weeks depending on DIGEST_TIMEZONE.
    sunday_late_utc = WEEK_START - timedelta(minutes=30)  # Monday 00:30 in Berlin (UTC+1)
    record = tool("edge", added_at=sunday_late_utc)
    berlin = select_week([record], week=WEEK, zone=ZoneInfo("Europe/Berlin"))
    assert [t.slug for t in berlin.new] == ["edge"]
    assert [t.slug for t in _select([record]).incumbents] == ["edge"]
