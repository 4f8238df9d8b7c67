"""Pairing: the rules of digest/content/pairing.py hold for any catalog; matching is optimal."""

from __future__ import annotations

import itertools
import random
from collections import Counter
from datetime import timedelta
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digest.catalog.records import ToolRecord, category_key
from digest.content.matching import _Solver, max_weight_matching, max_weight_matching_dense
from digest.content.pairing import (
    SIMILARITY_SCALE,
    PairingResult,
    pair_tools,
    similarity,
    similarity_units,
)
from tests.support.catalogs import WEEK_START, pairing_inputs, panel, tool

Inputs = tuple[list[ToolRecord], list[ToolRecord], frozenset[frozenset[str]]]
OLD = WEEK_START - timedelta(days=20)


def _best_total(n: int, weights: dict[tuple[int, int], int]) -> tuple[int, int]:
    """Brute force: the best (total weight, pair count) of any matching."""

    @cache
    def best(used: int) -> tuple[int, int]:
        i = next((v for v in range(n) if not used >> v & 1), None)
        if i is None:
            return (0, 0)
        result = best(used | 1 << i)
        for j in range(i + 1, n):
            if not used >> j & 1 and (i, j) in weights:
                total, count = best(used | 1 << i | 1 << j)
                result = max(result, (total + weights[(i, j)], count + 1))
        return result

    return best(0)


def _matched_total(mate: list[int], weights: dict[tuple[int, int], int]) -> int:
    total = 0
    for v, m in enumerate(mate):
        if m >= 0:
            assert mate[m] == v
        if m > v:
            total += weights[(v, m)]
    return total


@st.composite
def graphs(draw: st.DrawFn, max_n: int = 10) -> tuple[int, dict[tuple[int, int], int]]:
    n = draw(st.integers(0, max_n))
    top = draw(st.sampled_from([1, 2, 3, 10, 1000]))
    weights = {}
    for i, j in itertools.combinations(range(n), 2):
        if draw(st.booleans()):
            weights[(i, j)] = draw(st.integers(1, top))
    return n, weights


# -- the matching itself -------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(graphs())
def test_matching_weight_equals_brute_force_optimum(
    graph: tuple[int, dict[tuple[int, int], int]],
) -> None:
    # The blossom solver finds a matching as heavy as the best of all matchings.
    n, weights = graph
    mate = max_weight_matching(n, [(i, j, w) for (i, j), w in weights.items()])
    assert _matched_total(mate, weights) == _best_total(n, weights)[0]


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 11), st.integers(1, 3), st.randoms(use_true_random=False))
def test_dense_matching_with_few_neighbours_is_still_optimal(
    n: int, neighbours: int, rnd: random.Random
) -> None:
    # Starting from each vertex's heaviest edges only, the dual check still reaches the optimum.
    matrix = [[0] * n for _ in range(n)]
    weights = {}
    for i, j in itertools.combinations(range(n), 2):
        matrix[i][j] = matrix[j][i] = weights[(i, j)] = rnd.randint(1, 50)
    mate = max_weight_matching_dense(matrix, neighbours=neighbours)
    assert _matched_total(mate, weights) == _best_total(n, weights)[0]


def test_dense_matching_agrees_with_full_graph_on_larger_instances() -> None:
    # On graphs too big for brute force, the sparse-then-certify route equals the full solve.
    rnd = random.Random(7)
    for n in (40, 61, 90):
        matrix = [[0] * n for _ in range(n)]
        weights = {}
        for i, j in itertools.combinations(range(n), 2):
            matrix[i][j] = matrix[j][i] = weights[(i, j)] = rnd.randint(1, 10**6)
        sparse = _matched_total(max_weight_matching_dense(matrix, neighbours=2), weights)
        full = _matched_total(
            max_weight_matching(n, [(i, j, w) for (i, j), w in weights.items()]), weights
        )
        assert sparse == full


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 40), st.sampled_from([1, 3, 1000]), st.randoms(use_true_random=False))
def test_final_duals_certify_optimality(n: int, top: int, rnd: random.Random) -> None:
    # The final duals are feasible on every edge, zero on free vertices, and tight on matched
    # edges: the certificate the dense solver relies on to skip most edges.
    matrix = [[0] * n for _ in range(n)]
    for i, j in itertools.combinations(range(n), 2):
        matrix[i][j] = matrix[j][i] = rnd.randint(1, top)
    solver = _Solver(n, [(i, j, matrix[i][j]) for i, j in itertools.combinations(range(n), 2)])
    mate = solver.solve()
    assert solver.violations(matrix) == []
    assert all(solver.dual[v] >= 0 for v in range(n))
    assert all(solver.dual[v] == 0 for v in range(n) if mate[v] < 0)
    for v, m in enumerate(mate):
        if m > v:
            chain_v: set[int] = set()
            chain_m: set[int] = set()
            for start, chain in ((v, chain_v), (m, chain_m)):
                b = solver.parent[start]
                while b != -1:
                    chain.add(b)
                    b = solver.parent[b]
            shared = sum(solver.dual[b] for b in chain_v & chain_m)
            assert solver.dual[v] + solver.dual[m] + shared == 2 * matrix[v][m]


# -- pairing rules over generated catalogs ------------------------------------------------------


def _slugs(result: PairingResult) -> list[str]:
    return [p.a.slug for p in result.pairs] + [p.b.slug for p in result.pairs]


@settings(max_examples=60, deadline=None)
@given(pairing_inputs())
def test_every_pair_is_same_category_reviewed_and_new_first(inputs: Inputs) -> None:
    # A pair never mixes categories, never shows a tool without a panel verdict, and `a` is new.
    new, old, previous = inputs
    result = pair_tools(new, old, previous_matchups=previous)
    new_slugs = {t.slug for t in new}
    for pair in result.pairs:
        assert category_key(pair.a.category) == category_key(pair.b.category)
        assert category_key(pair.category) == category_key(pair.a.category)
        assert pair.a.reviews and pair.b.reviews
        assert pair.a.slug in new_slugs


@settings(max_examples=60, deadline=None)
@given(pairing_inputs())
def test_every_new_tool_is_accounted_for_exactly_once(inputs: Inputs) -> None:
    # Each new tool is in exactly one pair or in also_new; each incumbent in at most one pair.
    new, old, previous = inputs
    result = pair_tools(new, old, previous_matchups=previous)
    new_slugs = {t.slug for t in new}
    places = Counter(s for s in _slugs(result) if s in new_slugs)
    places.update(t.slug for t in result.also_new)
    assert places == Counter(new_slugs)
    used_old = Counter(s for s in _slugs(result) if s not in new_slugs)
    assert all(count == 1 for count in used_old.values())


@settings(max_examples=60, deadline=None)
@given(pairing_inputs())
def test_no_pair_repeats_an_earlier_matchup(inputs: Inputs) -> None:
    # A match-up already sent in an earlier digest is never sent again.
    new, old, previous = inputs
    result = pair_tools(new, old, previous_matchups=previous)
    assert not {pair.slugs for pair in result.pairs} & previous


@settings(max_examples=50, deadline=None)
@given(pairing_inputs(), st.randoms(use_true_random=False))
def test_pairing_is_deterministic_under_shuffling(inputs: Inputs, rnd: random.Random) -> None:
    # The same catalog gives the same pairs in the same order, whatever the input order.
    new, old, previous = inputs
    first = pair_tools(new, old, previous_matchups=previous)
    rnd.shuffle(new)
    rnd.shuffle(old)
    assert pair_tools(reversed(new), old, previous_matchups=previous) == first


@settings(max_examples=60, deadline=None)
@given(
    pairing_inputs(
        min_new=4,
        max_new=10,
        max_old=2,
        categories=["Developer Tools", " developer tools"],
        reviewed=True,
    )
)
def test_new_vs_new_pairs_maximise_total_similarity(inputs: Inputs) -> None:
    # Per category, the new-vs-new pairs reach the brute-force best total similarity
    # (and, among equal totals, the most pairs).
    new, old, previous = inputs
    result = pair_tools(new, old, previous_matchups=previous)
    new_slugs = {t.slug for t in new}
    for key in {category_key(t.category) for t in new}:
        group = sorted(
            (t for t in new if t.reviews and category_key(t.category) == key), key=lambda t: t.slug
        )
        weights = {
            (i, j): similarity_units(group[i], group[j]) * 100 + 1
            for i, j in itertools.combinations(range(len(group)), 2)
            if frozenset((group[i].slug, group[j].slug)) not in previous
        }
        chosen = [
            p for p in result.pairs if p.b.slug in new_slugs and category_key(p.a.category) == key
        ]
        got_total = sum(similarity_units(p.a, p.b) for p in chosen)
        best = _best_total(len(group), weights)
        assert (got_total * 100 + len(chosen)) == best[0]


@settings(max_examples=60, deadline=None)
@given(pairing_inputs())
def test_a_leftover_new_tool_had_no_partner_left(inputs: Inputs) -> None:
    # A reviewed tool ends in also_new only when every possible partner is taken or already seen.
    new, old, previous = inputs
    result = pair_tools(new, old, previous_matchups=previous)
    used = set(_slugs(result))
    for lonely in result.also_new:
        if not lonely.reviews:
            continue
        for other in [*new, *old]:
            if (
                other.slug != lonely.slug
                and other.reviews
                and category_key(other.category) == category_key(lonely.category)
                and other.slug not in used
            ):
                assert frozenset((lonely.slug, other.slug)) in previous


def _rank(new: ToolRecord, rival: ToolRecord) -> tuple[int, float, int, str]:
    return (
        -similarity_units(new, rival),
        -(rival.ship_share or 0.0),
        -len(rival.reviews),
        rival.slug,
    )


@settings(max_examples=60, deadline=None)
@given(pairing_inputs(max_new=5, max_old=8))
def test_incumbent_pairs_have_no_better_free_choice(inputs: Inputs) -> None:
    # A new tool paired with an incumbent could not have had a better incumbent that was free,
    # or one taken by a new tool that ranks it lower.
    new, old, previous = inputs
    result = pair_tools(new, old, previous_matchups=previous)
    old_slugs = {t.slug for t in old}
    holder = {p.b.slug: p.a for p in result.pairs if p.b.slug in old_slugs}
    for pair in result.pairs:
        if pair.b.slug not in old_slugs:
            continue
        for rival in old:
            if (
                rival.reviews
                and category_key(rival.category) == category_key(pair.a.category)
                and frozenset((pair.a.slug, rival.slug)) not in previous
                and _rank(pair.a, rival) < _rank(pair.a, pair.b)
            ):
                assert rival.slug in holder
                owner = holder[rival.slug]
                assert (_rank(owner, rival), owner.slug) < (_rank(pair.a, rival), pair.a.slug)


# -- documented behaviour on hand-made catalogs --------------------------------------------------


def test_matching_beats_greedy_first_fit() -> None:
    # The most similar single pair (b, c) is not taken when two other pairs are better together.
    a = tool("a", tags=("x",), pricing="paid", reviews=panel(1, 1))
    b = tool("b", tags=("x", "y"), pricing="free", reviews=panel(1, 1))
    c = tool("c", tags=("x", "y"), pricing="free", open_weights=True, reviews=panel(2, 0))
    d = tool("d", tags=("z",), pricing="free", open_weights=True, reviews=panel(2, 0))
    assert similarity(b, c) > max(similarity(a, b), similarity(c, d))
    result = pair_tools([a, b, c, d], [], previous_matchups=frozenset())
    assert {p.slugs for p in result.pairs} == {frozenset("ab"), frozenset("cd")}
    assert result.also_new == ()


def test_leftover_gets_the_most_similar_incumbent_not_seen_before() -> None:
    # The best incumbent is skipped when that match-up was sent before; the next best is used.
    fresh = tool("fresh", tags=("code", "agents"), pricing="free")
    twin = tool("twin", tags=("code", "agents"), pricing="free", added_at=OLD)
    cousin = tool("cousin", tags=("code",), pricing="free", added_at=OLD)
    stranger = tool("stranger", tags=("chat",), pricing="paid", added_at=OLD)
    first = pair_tools([fresh], [stranger, twin, cousin], previous_matchups=frozenset())
    assert [(p.a.slug, p.b.slug) for p in first.pairs] == [("fresh", "twin")]
    again = pair_tools(
        [fresh],
        [stranger, twin, cousin],
        previous_matchups=frozenset({frozenset(("fresh", "twin"))}),
    )
    assert [(p.a.slug, p.b.slug) for p in again.pairs] == [("fresh", "cousin")]


def test_incumbent_ties_go_to_ship_share_then_review_count() -> None:
    # Equally similar incumbents: the stronger panel wins, then the larger panel.
    fresh = tool("fresh", tags=(), pricing="unknown", reviews=panel(1, 1))
    weak = tool("weak", tags=(), pricing="unknown", reviews=panel(1, 1), added_at=OLD)
    big = tool("big", tags=(), pricing="unknown", reviews=panel(2, 2), added_at=OLD)
    # Same similarity to `fresh` (equal shares), same share: more reviews wins.
    assert similarity(fresh, weak) == similarity(fresh, big)
    result = pair_tools([fresh], [weak, big], previous_matchups=frozenset())
    assert result.pairs[0].b.slug == "big"
    strong = tool("strong", tags=(), pricing="unknown", reviews=panel(1, 0), added_at=OLD)
    twin = tool("twin", tags=(), pricing="unknown", reviews=panel(0, 1), added_at=OLD)
    # Both are half a share away from `fresh`: the one the panel ships wins.
    result = pair_tools([fresh], [twin, strong], previous_matchups=frozenset())
    assert result.pairs[0].b.slug == "strong"


def test_incumbents_without_reviews_are_never_a_partner() -> None:
    # An incumbent with no panel verdict cannot stand in a head-to-head.
    fresh = tool("fresh")
    silent = tool("silent", reviews=(), added_at=OLD)
    result = pair_tools([fresh], [silent], previous_matchups=frozenset())
    assert result.pairs == ()
    assert [t.slug for t in result.also_new] == ["fresh"]


def test_new_tools_without_reviews_go_to_also_new() -> None:
    # A new tool without a panel verdict is listed, never paired.
    reviewed, silent = tool("reviewed"), tool("silent", reviews=())
    result = pair_tools([reviewed, silent], [], previous_matchups=frozenset())
    assert result.pairs == ()
    assert {t.slug for t in result.also_new} == {"reviewed", "silent"}


def test_categories_match_ignoring_case_and_spacing() -> None:
    # "Developer Tools" and " developer   TOOLS " are one category; "Writing" is another.
    one = tool("one", category="Developer Tools")
    two = tool("two", category=" developer   TOOLS ")
    three = tool("three", category="Writing")
    result = pair_tools([one, two, three], [], previous_matchups=frozenset())
    assert [p.slugs for p in result.pairs] == [frozenset(("one", "two"))]
    assert result.pairs[0].category == "Developer Tools"
    assert [t.slug for t in result.also_new] == ["three"]


def test_new_vs_new_pairs_come_before_incumbent_pairs() -> None:
    # Pairs of two new tools are listed first, then new-vs-incumbent pairs.
    a, b = tool("a", category="Writing"), tool("b", category="Writing")
    c = tool("c", tags=("code", "agents"))
    d = tool("d", tags=("code", "agents"), added_at=OLD)
    result = pair_tools([c, a, b], [d], previous_matchups=frozenset())
    assert [p.slugs for p in result.pairs] == [frozenset("ab"), frozenset("cd")]
    assert result.pairs[1].a.slug == "c"


def test_exact_ties_resolve_the_same_whatever_the_order() -> None:
    # Tools that are all equally similar still pair the same way in every input order.
    clones = [tool(slug, reviews=panel(1, 1)) for slug in "abcde"]
    veteran = tool("v", reviews=panel(1, 1), added_at=OLD)
    results = {
        pair_tools(order, [veteran], previous_matchups=frozenset())
        for order in itertools.permutations(clones)
    }
    assert len(results) == 1


def test_duplicate_slugs_are_refused() -> None:
    # Two records with one slug would make the result depend on their order.
    with pytest.raises(ValueError, match="share the slug"):
        pair_tools([tool("x"), tool("x")], [], previous_matchups=frozenset())


def test_similarity_follows_the_documented_weights() -> None:
    # The score is exactly the documented weighted sum, symmetric, from 0 to 1.
    full = dict(tags=("code", "agents"), pricing="free", open_weights=True, license="MIT")
    a = tool("a", reviews=panel(3, 1), **full)
    assert similarity(a, tool("b", reviews=panel(3, 1), **full)) == 1.0
    b = tool(
        "b", tags=("code",), pricing="paid", open_weights=True, license="mit", reviews=panel(1, 3)
    )
    # tags 1/2 -> 0.2; pricing differs -> 0; open weights agree -> 0.15; license -> 0.05;
    # shares 0.75 vs 0.25 -> 0.2 x 0.5 = 0.1.
    assert similarity(a, b) == pytest.approx(0.5)
    assert similarity_units(a, b) == similarity_units(b, a)
    nothing = tool("n", tags=(), pricing="unknown", open_weights=None, license=None, reviews=())
    assert similarity(nothing, tool("m", tags=(), pricing="unknown", reviews=())) == 0.0
    assert 0 <= similarity_units(a, nothing) <= SIMILARITY_SCALE
