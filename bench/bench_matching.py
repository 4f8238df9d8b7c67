"""Why `digest/content/matching.py` is ours: its dense solver against networkx's matching.

Complete graphs of n new tools, weights as pairing gives them (random integers, and all equal),
best of five runs each, networkx timed on the graph alone (building it not counted):

    .venv/bin/python bench/bench_matching.py
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

import networkx as nx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from digest.content.matching import max_weight_matching_dense


def best_of(action: Callable[[], object], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        clock = time.perf_counter()
        action()
        times.append(time.perf_counter() - clock)
    return min(times)


def main() -> None:
    rng = random.Random(47)
    print(f"{'n':>4} {'weights':>8} {'ours s':>8} {'networkx s':>11}")
    for n in (60, 120, 240):
        for kind in ("random", "equal"):
            weights = [[0] * n for _ in range(n)]
            for i in range(n):
                for j in range(i + 1, n):
                    weights[i][j] = weights[j][i] = (
                        rng.randrange(1, 1000) if kind == "random" else 10
                    )
            graph = nx.Graph()
            graph.add_weighted_edges_from(
                (i, j, weights[i][j]) for i in range(n) for j in range(i + 1, n)
            )
            ours = best_of(lambda w=weights: max_weight_matching_dense(w))  # type: ignore[misc]
            theirs = best_of(lambda g=graph: nx.max_weight_matching(g), runs=3)  # type: ignore[misc]
            print(f"{n:>4} {kind:>8} {ours:>8.3f} {theirs:>11.3f}")


if __name__ == "__main__":
    main()
