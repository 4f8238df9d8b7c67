"""Maximum-weight matching in a general graph: Edmonds' blossom method, primal-dual form.

`max_weight_matching(n, edges)` returns, for each vertex, its partner or -1, such that the total
weight of the matched edges is as large as possible (not necessarily a perfect matching). Weights
are integers, so every dual variable stays an integer and optimality is exact.

The solver keeps a vertex dual `y[v]` and a blossom dual `z[B]` in doubled units: an edge (i, j)
has slack `y[i] + y[j] - 2 w(i, j) + sum(z[B] for blossoms B holding both ends)`. Alternating
trees grow from every free vertex over tight edges (slack 0); odd cycles shrink into blossoms; a
tight edge between two trees gives an augmenting path. After an augmentation only those two
trees are dissolved (their vertices become unlabelled and are checked again for tight edges to
the remaining trees); the other trees stay, which saves rebuilding every tree per augmentation.
When no tight edge helps, the duals move by the largest step that keeps every slack non-negative;
the search ends when the duals of the free vertices reach zero.

`max_weight_matching_dense(weights)` solves a complete graph given as a matrix. Scanning all
n^2/2 edges in every stage is too slow in Python for a few hundred vertices, so it solves the
graph of each vertex's heaviest edges first and then checks the final duals against *every*
edge: when no edge has negative slack the duals prove the matching optimal for the whole graph
(weak duality); otherwise the violating edges are added and the sparse graph is solved again.

Why our own and not networkx's `max_weight_matching` (a dev dependency, used as the oracle of
tests/test_matching_differential.py): on complete graphs with pairing's kind of weights it took
0.051 s at 60 new tools, 0.35 s at 120 and 2.0 s at 240, against 0.004, 0.007 and 0.017 s here
(`bench/bench_matching.py`, best of five, on the quiet 2-core machine; equal weights: 0.003
against 0.001 s at 60, 0.052 against 0.008 s at 240; docs/benchmarks.md).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Sequence

_FREE = 0
_OUTER = 1  # "S": even distance from a tree root
_INNER = 2  # "T": odd distance from a tree root


class _Solver:
    """One solve: vertices 0..n-1, blossom ids n..2n-1 reused as blossoms come and go."""

    def __init__(self, n: int, edges: Sequence[tuple[int, int, int]]) -> None:
        self.n = n
        self.weight: list[int] = []
        self.adj: list[list[tuple[int, int]]] = [[] for _ in range(n)]
        self.ends: list[tuple[int, int]] = []
        for u, v, w in edges:
            k = len(self.weight)
            self.weight.append(w)
            self.ends.append((u, v))
            self.adj[u].append((v, k))
            self.adj[v].append((u, k))
        size = 2 * n
        self.mate = [-1] * n
        self.top = list(range(n))  # the outermost blossom (or the vertex itself) of each vertex
        self.parent = [-1] * size
        self.kids: list[list[int]] = [[] for _ in range(size)]
        # links[b][i] = (x, y): x in kids[i], y in kids[i + 1], cyclically.
        self.links: list[list[tuple[int, int]]] = [[] for _ in range(size)]
        self.base = list(range(n)) + [-1] * n
        self.dual = [max(self.weight, default=0)] * n + [0] * n
        self.label = [_FREE] * size
        # via[x] = (outside vertex, vertex in x): the tight edge that labelled x.
        self.via: list[tuple[int, int] | None] = [None] * size
        self.tree = [-1] * size  # the root vertex of the tree of each labelled top-level node
        self.best_free = [-1] * n  # least-slack edge from an outer vertex to this vertex
        self.best_outer = [-1] * size  # least-slack edge from this outer blossom to another
        self.best_list: list[list[int] | None] = [None] * size
        self.spare = list(range(size - 1, n - 1, -1))
        self.blossoms: set[int] = set()
        self.queue: list[int] = []
        self.stale = False  # set when trees were dissolved: kept least-slack edges may be stale

    # -- small helpers -----------------------------------------------------------------------

    def slack(self, k: int) -> int:
        u, v = self.ends[k]
        return self.dual[u] + self.dual[v] - 2 * self.weight[k]

    def leaves(self, b: int) -> list[int]:
        if b < self.n:
            return [b]
        out: list[int] = []
        stack = [b]
        while stack:
            x = stack.pop()
            if x < self.n:
                out.append(x)
            else:
                stack.extend(self.kids[x])
        return out

    def mark(self, node: int, entry: int, source: int, label: int) -> None:
        """Give top-level `node` a label, entered at vertex `entry` from vertex `source`."""
        self.label[node] = label
        self.label[entry] = label
        edge = (source, entry) if source >= 0 else None
        self.via[node] = edge
        self.via[entry] = edge
        self.tree[node] = self.tree[self.top[source]] if source >= 0 else entry
        self.best_free[entry] = -1
        self.best_outer[node] = -1
        if label == _OUTER:
            self.queue.extend(self.leaves(node))

    def assign(self, entry: int, label: int, source: int) -> None:
        """Label the top blossom of `entry`; an inner one makes its mate's blossom outer."""
        node = self.top[entry]
        self.mark(node, entry, source, label)
        if label == _INNER:
            b = self.base[node]
            self.assign(self.mate[b], _OUTER, b)

    def tree_parent(self, s: int) -> int:
        """The outer blossom above outer blossom `s` in its tree, or -1 at the root."""
        edge = self.via[s]
        if edge is None:
            return -1
        inner = self.top[edge[0]]
        inner_edge = self.via[inner]
        assert inner_edge is not None
        return self.top[inner_edge[0]]

    def common_ancestor(self, v: int, w: int) -> int:
        """The lowest outer blossom above both v and w, or -1 when they are in different trees."""
        seen: set[int] = set()
        a, b = self.top[v], self.top[w]
        while a != -1 or b != -1:
            if a != -1:
                if a in seen:
                    return a
                seen.add(a)
                a = self.tree_parent(a)
            if b != -1:
                if b in seen:
                    return b
                seen.add(b)
                b = self.tree_parent(b)
        return -1

    # -- blossoms ----------------------------------------------------------------------------

    def path_up(self, start: int, ancestor: int) -> tuple[list[int], list[tuple[int, int]]]:
        """The blossoms from the top of `start` up to (not including) `ancestor`, with their via."""
        nodes: list[int] = []
        edges: list[tuple[int, int]] = []
        b = self.top[start]
        while b != ancestor:
            edge = self.via[b]
            assert edge is not None
            nodes.append(b)
            edges.append(edge)
            b = self.top[edge[0]]
        return nodes, edges

    def shrink(self, ancestor: int, v: int, w: int) -> None:
        """Turn the odd cycle ancestor..v-w..ancestor into one new outer blossom."""
        top = self.top
        down, down_links = self.path_up(v, ancestor)
        up, up_links = self.path_up(w, ancestor)
        blossom = self.spare.pop()
        self.blossoms.add(blossom)
        kids = [ancestor, *reversed(down), *up]
        self.kids[blossom] = kids
        self.links[blossom] = [
            *reversed(down_links),
            (v, w),
            *((y, x) for x, y in up_links),
        ]
        self.base[blossom] = self.base[ancestor]
        self.parent[blossom] = -1
        self.dual[blossom] = 0
        self.label[blossom] = _OUTER
        self.via[blossom] = self.via[ancestor]
        self.tree[blossom] = self.tree[ancestor]
        for kid in kids:
            self.parent[kid] = blossom
            members = self.leaves(kid)
            for x in members:
                top[x] = blossom
            if self.label[kid] == _INNER:
                # Inner vertices become outer and must now be scanned.
                self.queue.extend(members)
        # Least-slack edge towards each other outer blossom, for the next dual step.
        towards: dict[int, int] = {}
        for kid in kids:
            known = self.best_list[kid]
            if known is None:
                known = [k for x in self.leaves(kid) for _, k in self.adj[x]]
            for k in known:
                i, j = self.ends[k]
                other = top[j] if top[i] == blossom else top[i]
                if other == blossom or self.label[other] != _OUTER:
                    continue
                held = towards.get(other)
                if held is None or self.slack(k) < self.slack(held):
                    towards[other] = k
            self.best_list[kid] = None
            self.best_outer[kid] = -1
        self.best_list[blossom] = list(towards.values())
        self.best_outer[blossom] = min(
            towards.values(), key=lambda k: (self.slack(k), k), default=-1
        )

    def release(self, b: int) -> None:
        self.kids[b] = []
        self.links[b] = []
        self.base[b] = -1
        self.parent[b] = -1
        self.label[b] = _FREE
        self.via[b] = None
        self.best_outer[b] = -1
        self.best_list[b] = None
        self.dual[b] = 0
        self.blossoms.discard(b)
        self.spare.append(b)

    def expand(self, b: int) -> None:
        """Dissolve inner blossom b, whose dual reached 0, and relabel its kids."""
        kids, links = self.kids[b], self.links[b]
        for kid in kids:
            self.parent[kid] = -1
            for x in self.leaves(kid):
                self.top[x] = kid
        self.relabel_expanded(b, kids, links)
        self.release(b)

    def relabel_expanded(self, b: int, kids: list[int], links: list[tuple[int, int]]) -> None:
        """Keep the tree alternating through the kids of an expanded inner blossom."""
        edge = self.via[b]
        assert edge is not None
        source, entry = edge
        count = len(kids)
        start = at = kids.index(self.top[entry])
        # Walk to the base kid (index 0) the way that has an even number of steps.
        step = 1 if at % 2 == 1 else -1

        def link(i: int) -> tuple[int, int]:
            """The edge from kids[i] to the next kid in the walking direction."""
            if step == 1:
                return links[i]
            x, y = links[i - 1]
            return y, x

        while at != 0:
            self.mark(kids[at], entry, source, _INNER)
            x, y = link(at)
            nxt = (at + step) % count
            self.mark(kids[nxt], y, x, _OUTER)
            source, entry = link(nxt)
            at = (nxt + step) % count
        self.mark(kids[0], entry, source, _INNER)
        # Kids off that path become free; tight edges from outer vertices into them are rescanned.
        off = range(1, start) if step == 1 else range(start + 1, count)
        for i in off:
            kid = kids[i]
            self.label[kid] = _FREE
            for x in self.leaves(kid):
                self.label[x] = _FREE
                self.refresh(x)

    def rebase(self, b: int, v: int) -> None:
        """Rematch inside blossom b so that vertex v becomes its base.

        Each nested blossom is rebased on its own (a stack, not recursion: nesting can be deep),
        which is safe because a rebase only changes mates strictly inside that blossom.
        """
        work = [(b, v)]
        while work:
            b, v = work.pop()
            if b < self.n:
                continue
            t = v
            while self.parent[t] != b:
                t = self.parent[t]
            work.append((t, v))
            kids, links = self.kids[b], self.links[b]
            count = len(kids)
            i = kids.index(t)
            flips = range(i + 1, count, 2) if i % 2 == 1 else range(i - 2, -1, -2)
            for j in flips:
                x, y = links[j]
                work.append((kids[j], x))
                work.append((kids[(j + 1) % count], y))
                self.mate[x] = y
                self.mate[y] = x
            self.kids[b] = kids[i:] + kids[:i]
            self.links[b] = links[i:] + links[:i]
            self.base[b] = v

    def augment(self, v: int, w: int) -> None:
        """Flip the augmenting path root..v-w..root."""
        for start, partner in ((v, w), (w, v)):
            u = start
            while True:
                outer = self.top[u]
                self.rebase(outer, u)
                self.mate[u] = partner
                edge = self.via[outer]
                if edge is None:
                    break
                inner = self.top[edge[0]]
                inner_edge = self.via[inner]
                assert inner_edge is not None
                p, q = inner_edge
                self.rebase(inner, q)
                self.mate[q] = p
                u, partner = p, q

    # -- trees -------------------------------------------------------------------------------

    def refresh(self, x: int) -> None:
        """Recompute the least-slack edge from an outer vertex to unlabelled vertex x; queue the
        outer end of any tight one so that the next scan labels x."""
        top, label, dual, weight = self.top, self.label, self.dual, self.weight
        home, dx = top[x], self.dual[x]
        best, best_slack = -1, 0
        for w, k in self.adj[x]:
            bw = top[w]
            if bw == home or label[bw] != _OUTER:
                continue
            slack = dx + dual[w] - 2 * weight[k]
            if slack <= 0:
                self.queue.append(w)
            elif best < 0 or slack < best_slack:
                best, best_slack = k, slack
        self.best_free[x] = best

    def dissolve(self, roots: set[int]) -> None:
        """Unlabel the trees of `roots` after an augmentation went through them."""
        freed: list[int] = []
        for node in self.top_level():
            if self.label[node] == _FREE or self.tree[node] not in roots:
                continue
            stack = [node]
            while stack:
                x = stack.pop()
                self.label[x] = _FREE
                self.best_outer[x] = -1
                if x < self.n:
                    freed.append(x)
                else:
                    self.best_list[x] = None
                    stack.extend(self.kids[x])
        for x in freed:
            self.refresh(x)
        self.stale = True

    def refresh_outer(self, b: int) -> None:
        """Recompute the least-slack edge from outer node b to another outer node."""
        top, label = self.top, self.label
        best, best_slack = -1, 0
        for x in self.leaves(b):
            for w, k in self.adj[x]:
                bw = top[w]
                if bw == b or label[bw] != _OUTER:
                    continue
                slack = self.slack(k)
                if slack <= 0:
                    self.queue.append(x)
                elif best < 0 or slack < best_slack:
                    best, best_slack = k, slack
        self.best_outer[b] = best

    # -- search --------------------------------------------------------------------------------

    def scan(self) -> None:
        """Grow the trees over tight edges, shrinking blossoms and augmenting as they appear."""
        top, label, dual, weight, ends = self.top, self.label, self.dual, self.weight, self.ends
        best_outer, best_free = self.best_outer, self.best_free
        while self.queue:
            v = self.queue.pop()
            if label[top[v]] != _OUTER:
                continue  # its tree was dissolved since it was queued
            for w, k in self.adj[v]:
                bv, bw = top[v], top[w]
                if bv == bw:
                    continue
                slack = dual[v] + dual[w] - 2 * weight[k]
                other = label[bw]
                if slack <= 0:
                    if other == _FREE:
                        self.assign(w, _INNER, v)
                    elif other == _OUTER:
                        ancestor = self.common_ancestor(v, w)
                        if ancestor >= 0:
                            self.shrink(ancestor, v, w)
                        else:
                            roots = {self.tree[bv], self.tree[bw]}
                            self.augment(v, w)
                            self.dissolve(roots)
                            break
                elif other == _OUTER:
                    held = best_outer[bv]
                    if held < 0:
                        best_outer[bv] = k
                    else:
                        x, y = ends[held]
                        if slack < dual[x] + dual[y] - 2 * weight[held]:
                            best_outer[bv] = k
                elif label[w] == _FREE:
                    held = best_free[w]
                    if held < 0:
                        best_free[w] = k
                    else:
                        x, y = ends[held]
                        if slack < dual[x] + dual[y] - 2 * weight[held]:
                            best_free[w] = k

    def top_level(self) -> list[int]:
        """Every outermost node (vertex or blossom), in a fixed order."""
        return list(dict.fromkeys(self.top))

    def revalidate(self, tops: list[int]) -> None:
        """Recompute least-slack entries that point into trees dissolved since they were kept."""
        n, label, top, ends = self.n, self.label, self.top, self.ends
        for x in range(n):
            k = self.best_free[x]
            if k >= 0 and label[top[x]] == _FREE:
                u, v = ends[k]
                if label[top[v if u == x else u]] != _OUTER:
                    self.refresh(x)
        for b in tops:
            k = self.best_outer[b]
            if k >= 0 and label[b] == _OUTER:
                u, v = ends[k]
                far = top[v] if top[u] == b else top[u]
                if far == b or label[far] != _OUTER:
                    self.refresh_outer(b)

    def step_duals(self) -> bool:
        """Move the duals as far as allowed and act on what became tight; False when optimal."""
        tops = self.top_level()
        if self.stale:
            self.stale = False
            self.revalidate(tops)
            if self.queue:
                return True  # a tight edge turned up: scan before moving any dual
        free_slack, free_edges = self._tightest_free()
        outer_slack, outer_edges, inner_dual, inner_blossoms = self._tightest_in_trees(tops)
        # Free vertices hold the smallest vertex dual: once it reaches 0 the matching is optimal.
        delta = min(self.dual[: self.n], default=0)
        optimal = True
        for candidate in (free_slack, outer_slack, inner_dual):
            if 0 <= candidate < delta:
                delta, optimal = candidate, False
        self._move_duals(tops, delta)
        if optimal:
            return False
        # Every edge and blossom that reached zero is acted on at once: ties are common.
        label, top, ends = self.label, self.top, self.ends
        if free_slack == delta:
            for k in free_edges:
                u, v = ends[k]
                self.queue.append(u if label[top[u]] == _OUTER else v)
        if outer_slack == delta:
            self.queue.extend(ends[k][0] for k in outer_edges)
        if inner_dual == delta:
            for b in inner_blossoms:
                if b in self.blossoms and self.parent[b] == -1 and label[b] == _INNER:
                    self.expand(b)
        return True

    def _tightest_free(self) -> tuple[int, list[int]]:
        """The least slack of an edge from an outer to an unlabelled vertex, and those edges."""
        label, ends, dual, weight = self.label, self.ends, self.dual, self.weight
        free_slack, free_edges = -1, []
        for k, b in zip(self.best_free, self.top, strict=True):
            if k >= 0 and label[b] == _FREE:
                u, v = ends[k]
                slack = dual[u] + dual[v] - 2 * weight[k]
                if free_slack < 0 or slack < free_slack:
                    free_slack, free_edges = slack, [k]
                elif slack == free_slack:
                    free_edges.append(k)
        return free_slack, free_edges

    def _tightest_in_trees(self, tops: list[int]) -> tuple[int, list[int], int, list[int]]:
        """Half the least slack between two outer blossoms (and those edges); half the least
        dual of an inner blossom (and those blossoms, which may have to expand)."""
        n, label, ends, dual, weight = self.n, self.label, self.ends, self.dual, self.weight
        outer_slack, outer_edges = -1, []
        inner_dual, inner_blossoms = -1, []
        for b in tops:
            if label[b] == _OUTER:
                k = self.best_outer[b]
                if k >= 0:
                    u, v = ends[k]
                    half = (dual[u] + dual[v] - 2 * weight[k]) // 2
                    if outer_slack < 0 or half < outer_slack:
                        outer_slack, outer_edges = half, [k]
                    elif half == outer_slack:
                        outer_edges.append(k)
            elif label[b] == _INNER and b >= n:
                half = dual[b] // 2
                if inner_dual < 0 or half < inner_dual:
                    inner_dual, inner_blossoms = half, [b]
                elif half == inner_dual:
                    inner_blossoms.append(b)
        return outer_slack, outer_edges, inner_dual, inner_blossoms

    def _move_duals(self, tops: list[int], delta: int) -> None:
        """Outer vertices down and inner ones up by delta; blossoms the other way, doubled."""
        n, label, dual = self.n, self.label, self.dual
        labels = [label[b] for b in self.top]
        dual[:n] = [
            y - delta if lab == _OUTER else y + delta if lab == _INNER else y
            for y, lab in zip(dual[:n], labels, strict=True)
        ]
        for b in tops:
            if b >= n:
                if label[b] == _OUTER:
                    dual[b] += 2 * delta
                elif label[b] == _INNER:
                    dual[b] -= 2 * delta

    def solve(self) -> list[int]:
        for v in range(self.n):
            if self.mate[v] == -1:
                self.assign(v, _OUTER, -1)
        while True:
            self.scan()
            if not self.step_duals():
                return self.mate

    # -- certificate -------------------------------------------------------------------------

    def violations(self, weights: Sequence[Sequence[int]]) -> list[tuple[int, int, int]]:
        """Edges of the complete graph `weights` whose slack under the final duals is negative."""
        n, dual, top = self.n, self.dual, self.top
        chains: list[list[int]] = []
        for v in range(n):
            chain: list[int] = []
            b = self.parent[v]
            while b != -1:
                chain.append(b)
                b = self.parent[b]
            chains.append(chain[::-1])
        found: list[tuple[int, int, int]] = []
        for i in range(n):
            yi, row, ti = dual[i], weights[i], top[i]
            for j in range(i + 1, n):
                w = row[j]
                if w <= 0 or yi + dual[j] >= 2 * w:
                    continue
                shared = 0
                if ti == top[j]:
                    for a, b in zip(chains[i], chains[j], strict=False):
                        if a != b:
                            break
                        shared += dual[a]
                if yi + dual[j] + shared < 2 * w:
                    found.append((i, j, w))
        return found


def max_weight_matching(n: int, edges: Iterable[tuple[int, int, int]]) -> list[int]:
    """The partner of each vertex (or -1) in a maximum-weight matching of the given graph.

    `edges` are (u, v, weight) with integer weights; parallel edges keep the heaviest, and edges of
    weight 0 or less are ignored since they can never add to the total.
    """
    heaviest: dict[tuple[int, int], int] = {}
    for u, v, w in edges:
        if u == v or w <= 0:
            continue
        key = (u, v) if u < v else (v, u)
        if w > heaviest.get(key, 0):
            heaviest[key] = w
    return _Solver(n, [(u, v, w) for (u, v), w in sorted(heaviest.items())]).solve()


def _heaviest(row: Sequence[int], i: int, count: int) -> list[int]:
    """The indices of the `count` heaviest positive entries of row i, leaving out i itself.

    Ties at the cut go to the indices right after i, so tied vertices do not all pick the same few.
    """
    others = list(row)
    others[i] = 0
    values = heapq.nlargest(count, others)
    if not values:
        return []
    cut = max(values[-1], 1)
    picked = [j for j, w in enumerate(others) if w > cut]
    for j in itertools.chain(range(i + 1, len(others)), range(i)):
        if len(picked) >= count:
            break
        if others[j] == cut:
            picked.append(j)
    return picked


def max_weight_matching_dense(
    weights: Sequence[Sequence[int]], *, neighbours: int = 8
) -> list[int]:
    """Maximum-weight matching of the complete graph with the symmetric matrix `weights`.

    Starts from each vertex's `neighbours` heaviest edges and adds edges only when the duals of
    the sparse solution fail to certify optimality over the whole matrix (see module docstring).
    """
    n = len(weights)
    chosen: set[tuple[int, int]] = set()
    for i in range(n):
        for j in _heaviest(weights[i], i, neighbours):
            chosen.add((i, j) if i < j else (j, i))
    while True:
        solver = _Solver(n, [(i, j, weights[i][j]) for i, j in sorted(chosen)])
        mate = solver.solve()
        missing = solver.violations(weights)
        if not missing:
            return mate
        chosen.update((i, j) for i, j, _ in missing)
