# Our blossom matching finds a valid matching as heavy as networkx's, on any graph up to 60 nodes.
"""Differential test of `digest.content.matching` against `networkx.max_weight_matching`."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

import networkx as nx
from hypothesis import given, settings
from hypothesis import strategies as st

from digest.content.matching import max_weight_matching, max_weight_matching_dense

Edge = tuple[int, int, int]


@st.composite
def sparse_graphs(draw: st.DrawFn) -> tuple[int, list[Edge]]:
    """A vertex count and raw edges: self-loops, parallel edges and weights <= 0 included."""
    n = draw(st.integers(0, 60))
    top = draw(st.sampled_from([1, 2, 5, 100, 10**6]))  # few distinct weights: many ties
    count = draw(st.integers(0, 5 * n))
    rnd = random.Random(draw(st.integers(0, 2**32)))
    edges = [(rnd.randrange(n), rnd.randrange(n), rnd.randint(-2, top)) for _ in range(count)]
    return n, edges


@st.composite
def weight_matrices(draw: st.DrawFn) -> list[list[int]]:
    """A symmetric matrix with a zero diagonal; 0 elsewhere means no edge."""
    n = draw(st.integers(0, 60))
    top = draw(st.sampled_from([1, 2, 5, 100, 10**6]))
    density = draw(st.sampled_from([0.05, 0.3, 1.0]))
    rnd = random.Random(draw(st.integers(0, 2**32)))
    matrix = [[0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if rnd.random() < density:
                matrix[i][j] = matrix[j][i] = rnd.randint(1, top)
    return matrix


def _heaviest(edges: Sequence[Edge]) -> dict[tuple[int, int], int]:
    # The graph the function is documented to solve: heaviest of parallel edges, weights > 0.
    kept: dict[tuple[int, int], int] = {}
    for u, v, w in edges:
        if u != v and w > 0:
            key = (min(u, v), max(u, v))
            kept[key] = max(w, kept.get(key, 0))
    return kept


def _networkx_total(weights: Mapping[tuple[int, int], int]) -> int:
    graph = nx.Graph()
    graph.add_weighted_edges_from((u, v, w) for (u, v), w in weights.items())
    return sum(graph[u][v]["weight"] for u, v in nx.max_weight_matching(graph))


def _checked_total(n: int, mate: Sequence[int], weights: Mapping[tuple[int, int], int]) -> int:
    """The matching's weight, after checking it is a matching of this graph."""
    assert len(mate) == n
    total = 0
    for v, partner in enumerate(mate):
        if partner == -1:
            continue
        assert 0 <= partner < n and partner != v, (v, partner)
        assert mate[partner] == v, (v, partner, mate[partner])
        key = (min(v, partner), max(v, partner))
        assert key in weights, f"{key} is not an edge"
        if v < partner:
            total += weights[key]
    return total


@settings(max_examples=150, deadline=None)
@given(sparse_graphs())
def test_sparse_matching_is_valid_and_as_heavy_as_networkx(graph: tuple[int, list[Edge]]) -> None:
    n, edges = graph
    weights = _heaviest(edges)
    mate = max_weight_matching(n, edges)
    assert _checked_total(n, mate, weights) == _networkx_total(weights)


@settings(max_examples=100, deadline=None)
@given(weight_matrices(), st.sampled_from([1, 2, 8]))
def test_dense_matching_is_valid_and_as_heavy_as_networkx(
    matrix: list[list[int]], neighbours: int
) -> None:
    # Few neighbours make the first sparse solve miss edges, so the repair loop runs too.
    n = len(matrix)
    weights = {(i, j): matrix[i][j] for i in range(n) for j in range(i + 1, n) if matrix[i][j] > 0}
    mate = max_weight_matching_dense(matrix, neighbours=neighbours)
    assert _checked_total(n, mate, weights) == _networkx_total(weights)
