"""Pairing benchmark: new tools all in one category, plus incumbents, through `pair_tools`.

    .venv/bin/python bench/bench_pairing.py [--sizes 100,300,500] [--incumbents 200] [--runs 3]

The catalog is seeded random data shaped like the real one: tags from a small vocabulary, four
pricing tiers, a few licenses, panels of one to six reviews. One category is the worst case:
the matching then runs on the complete graph of all new tools. Prints the best and median wall
time of `pair_tools` over the runs, and the best of its new-vs-new step alone (similarity
matrix plus maximum-weight matching).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from digest.catalog.records import ReviewRecord, ToolRecord
from digest.content.pairing import _match_new, _profile, _tag_index, pair_tools

TAGS = ["code", "agents", "chat", "vision", "audio", "rag", "search", "ide", "cli", "open", "local"]
LICENSES = [None, "MIT", "Apache-2.0", "Llama 4 Community License", "Proprietary"]
ADDED = datetime(2026, 11, 24, 10, tzinfo=UTC)


def make_tool(rnd: random.Random, slug: str, *, added_at: datetime) -> ToolRecord:
    reviews = tuple(
        ReviewRecord(
            reviewer=f"Reviewer {k}",
            verdict=rnd.choice(["ship", "ship", "skip"]),
            score=rnd.randint(0, 100),
            quote=f"Quote {slug} {k}",
        )
        for k in range(rnd.randint(1, 6))
    )
    return ToolRecord(
        slug=slug,
        name=slug.title(),
        category="Developer Tools",
        tagline="Benchmark tool",
        added_at=added_at,
        pricing=rnd.choice(["free", "freemium", "paid", "unknown"]),
        license=rnd.choice(LICENSES),
        open_weights=rnd.choice([None, True, False]),
        tags=tuple(rnd.sample(TAGS, rnd.randint(0, 4))),
        reviews=reviews,
    )


def timed(action: Callable[[], object], runs: int) -> tuple[float, float]:
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - started)
    return min(seconds), statistics.median(seconds)


def measure(size: int, incumbents: int, runs: int) -> str:
    """One table row: `size` new tools and `incumbents` older ones, all in one category."""
    rnd = random.Random(size)
    new = [make_tool(rnd, f"new-{i:04d}", added_at=ADDED) for i in range(size)]
    old = [
        make_tool(rnd, f"old-{i:04d}", added_at=ADDED - timedelta(days=30))
        for i in range(incumbents)
    ]
    previous = frozenset(
        frozenset((rnd.choice(new).slug, rnd.choice(old).slug)) for _ in range(incumbents)
    )
    result = pair_tools(new, old, previous_matchups=previous)
    best, median = timed(lambda: pair_tools(new, old, previous_matchups=previous), runs)
    group = sorted(new, key=lambda tool: tool.slug)
    index = _tag_index(group)
    profiles = [_profile(tool, index) for tool in group]
    matching, _ = timed(lambda: _match_new(group, profiles, previous), runs)
    return (
        f"{size:>5} {incumbents:>10} {len(result.pairs):>6} {len(result.also_new):>8} "
        f"{best:>15.3f}s {median:>7.3f}s {matching:>15.3f}s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="100,300,500")
    parser.add_argument("--incumbents", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    header = f"{'new':>5} {'incumbents':>10} {'pairs':>6} {'also new':>8} "
    header += f"{'pair_tools best':>16} {'median':>8} {'new-vs-new best':>16}"
    print(header)
    print("-" * len(header))
    for size in (int(s) for s in args.sizes.split(",")):
        print(measure(size, args.incumbents, args.runs))


if __name__ == "__main__":
    main()
