"""Head-to-head pairs for a digest: which new tool is compared with which, and why.

Rules, in order:

1. Both tools of a pair share a category (compared with `digest.domain.category_key`), and
   both have panel reviews: a tool without a panel verdict is never in a head-to-head.
2. Every new tool is in at most one pair; every incumbent too.
3. New tools are paired with each other first. Within a category the pairs maximise the total
   similarity (a maximum-weight matching, `digest.content.matching`); among pairings with the
   same total, one with more pairs wins.
4. A new tool left over gets the most similar incumbent of its category; ties go to the incumbent
   with the higher panel ship share, then more reviews, then the smaller slug. Candidate pairs
   are taken best first over the whole category (a new tool and an incumbent are paired when
   neither has a better free choice left), so no two leftovers could swap incumbents and both
   gain. No pair repeats a match-up on record from an earlier digest.
5. A new tool with no possible partner goes to `also_new`.
6. An editor's pinned pairs (`pinned`) are in the result whatever their similarity; their tools
   leave the pool first, and rules 3 to 5 pair the rest around them.
7. Inputs are sorted by slug before anything else, so the result never depends on input order.

Similarity of two tools, from 0 to 1 (computed in integer millionths so that it is exact):

    0.40 x Jaccard index of their tags (case- and whitespace-insensitive; no tags: 0)
  + 0.20 if both state the same pricing tier ("unknown" matches nothing)
  + 0.15 if both state whether weights are open, and agree
  + 0.05 if both name the same license (case- and whitespace-insensitive)
  + 0.20 x (1 - |difference of panel ship shares|) when both have reviews
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from digest.catalog.records import ToolRecord, category_key
from digest.content.matching import max_weight_matching_dense

SIMILARITY_SCALE = 1_000_000
TAGS_WEIGHT = 400_000
PRICING_WEIGHT = 200_000
OPEN_WEIGHTS_WEIGHT = 150_000
LICENSE_WEIGHT = 50_000
PANEL_WEIGHT = 200_000


@dataclass(frozen=True)
class Pair:
    """A head-to-head: `a` is new this week, `b` is new too or an incumbent."""

    a: ToolRecord
    b: ToolRecord
    category: str
    similarity: float

    @property
    def slugs(self) -> frozenset[str]:
        return frozenset((self.a.slug, self.b.slug))


@dataclass(frozen=True)
class PairingResult:
    """The week's pairs, best first (new-vs-new before new-vs-incumbent), and the rest."""

    pairs: tuple[Pair, ...]
    also_new: tuple[ToolRecord, ...]


@dataclass(frozen=True)
class _Profile:
    """What similarity reads from a tool, normalised once."""

    tags: int  # bit set over the tag index of one pairing run
    tag_count: int
    pricing: str | None
    open_weights: bool | None
    license: str | None
    ships: int
    reviews: int


def _fold(text: str) -> str:
    return " ".join(text.split()).casefold()


def _tag_index(tools: Iterable[ToolRecord]) -> dict[str, int]:
    names = sorted({_fold(tag) for tool in tools for tag in tool.tags} - {""})
    return {name: 1 << bit for bit, name in enumerate(names)}


def _profile(tool: ToolRecord, index: dict[str, int]) -> _Profile:
    mask = 0
    for tag in tool.tags:
        mask |= index.get(_fold(tag), 0)
    license_key = _fold(tool.license) if tool.license else ""
    return _Profile(
        tags=mask,
        tag_count=mask.bit_count(),
        pricing=None if tool.pricing == "unknown" else tool.pricing,
        open_weights=tool.open_weights,
        license=license_key or None,
        ships=tool.ship_count,
        reviews=len(tool.reviews),
    )


def _ratio(weight: int, numerator: int, denominator: int) -> int:
    """weight x numerator / denominator, rounded half up, in integers."""
    return (2 * weight * numerator + denominator) // (2 * denominator)


def _units(p: _Profile, q: _Profile) -> int:
    points = 0
    union = p.tag_count + q.tag_count
    if union:
        shared = (p.tags & q.tags).bit_count()
        points += _ratio(TAGS_WEIGHT, shared, union - shared)
    if p.pricing is not None and p.pricing == q.pricing:
        points += PRICING_WEIGHT
    if p.open_weights is not None and p.open_weights == q.open_weights:
        points += OPEN_WEIGHTS_WEIGHT
    if p.license is not None and p.license == q.license:
        points += LICENSE_WEIGHT
    if p.reviews and q.reviews:
        both = p.reviews * q.reviews
        gap = abs(p.ships * q.reviews - q.ships * p.reviews)
        points += _ratio(PANEL_WEIGHT, both - gap, both)
    return points


def similarity_units(a: ToolRecord, b: ToolRecord) -> int:
    """Similarity in millionths (0..SIMILARITY_SCALE): the exact value pairing maximises."""
    index = _tag_index((a, b))
    return _units(_profile(a, index), _profile(b, index))


def similarity(a: ToolRecord, b: ToolRecord) -> float:
    """Similarity from 0 to 1, as documented in the module docstring."""
    return similarity_units(a, b) / SIMILARITY_SCALE


def _by_slug(tools: Iterable[ToolRecord], role: str) -> list[ToolRecord]:
    ordered = sorted(tools, key=lambda tool: tool.slug)
    for first, second in pairwise(ordered):
        if first.slug == second.slug:
            raise ValueError(f"two {role} records share the slug {first.slug!r}")
    return ordered


def _category_label(tools: Sequence[ToolRecord]) -> str:
    """The most used spelling of a category (ties: the alphabetically first)."""
    spellings = Counter(" ".join(tool.category.split()) for tool in tools)
    return min(spellings, key=lambda text: (-spellings[text], text))


def _strength(tool: ToolRecord) -> tuple[float, int]:
    return (tool.ship_share or 0.0, len(tool.reviews))


def _oriented(x: ToolRecord, y: ToolRecord) -> tuple[ToolRecord, ToolRecord]:
    """Put the tool with the stronger panel first (then the smaller slug)."""
    sx, sy = _strength(x), _strength(y)
    if sx > sy or (sx == sy and x.slug < y.slug):
        return x, y
    return y, x


def _match_new(
    tools: list[ToolRecord], profiles: list[_Profile], previous: frozenset[frozenset[str]]
) -> list[tuple[int, int, int]]:
    """Index pairs (i, j, units) of a maximum-similarity matching among new tools of a category."""
    n = len(tools)
    if n < 2:
        return []
    # Scaled so one millionth of similarity outweighs any number of pairs: pair count breaks ties.
    scale = n // 2 + 1
    on_record = {slug for matchup in previous for slug in matchup}
    weights = [[0] * n for _ in range(n)]
    for i in range(n):
        p, row, slug = profiles[i], weights[i], tools[i].slug
        check = slug in on_record
        for j in range(i + 1, n):
            if check and frozenset((slug, tools[j].slug)) in previous:
                continue
            row[j] = weights[j][i] = _units(p, profiles[j]) * scale + 1
    mate = max_weight_matching_dense(weights)
    return [(i, j, (weights[i][j] - 1) // scale) for i, j in enumerate(mate) if j > i]


_Ranked = list[tuple[tuple[int, int, str, str, str], Pair]]


def pair_tools(
    new: Iterable[ToolRecord],
    incumbents: Iterable[ToolRecord],
    *,
    previous_matchups: frozenset[frozenset[str]] = frozenset(),
    pinned: Sequence[tuple[str, str]] = (),
) -> PairingResult:
    """Pair the week's new tools by the rules in the module docstring."""
    fresh = _by_slug(new, "new")
    settled = _by_slug(incumbents, "incumbent")
    clash = {tool.slug for tool in fresh} & {tool.slug for tool in settled}
    if clash:
        raise ValueError(f"tools are both new and incumbent: {sorted(clash)}")
    _, _, everyone = _by_category(fresh, settled)
    labels = {key: _category_label(tools) for key, tools in everyone.items()}
    ranked = _pinned_pairs(fresh, settled, pinned, labels)
    paired = {slug for _, pair in ranked for slug in pair.slugs}
    new_by_key, old_by_key, _ = _by_category(
        [tool for tool in fresh if tool.slug not in paired],
        [tool for tool in settled if tool.slug not in paired],
    )
    for key in sorted(new_by_key):
        label = labels[key]
        group, rivals = new_by_key[key], old_by_key[key]
        index = _tag_index([*group, *rivals])
        profiles = [_profile(tool, index) for tool in group]

        for i, j, units in _match_new(group, profiles, previous_matchups):
            a, b = _oriented(group[i], group[j])
            pair = Pair(a, b, label, units / SIMILARITY_SCALE)
            ranked.append(((0, -units, key, a.slug, b.slug), pair))
            paired.update((a.slug, b.slug))
        rival_profiles = [_profile(tool, index) for tool in rivals]
        ranked += _against_incumbents(
            key, label, group, profiles, rivals, rival_profiles, paired, previous_matchups
        )

    ranked.sort(key=lambda item: item[0])
    also_new = sorted(
        (tool for tool in fresh if tool.slug not in paired),
        key=lambda tool: (category_key(tool.category), tool.name.casefold(), tool.slug),
    )
    return PairingResult(tuple(pair for _, pair in ranked), tuple(also_new))


def _pinned_pairs(
    fresh: list[ToolRecord],
    settled: list[ToolRecord],
    pinned: Sequence[tuple[str, str]],
    labels: dict[str, str],
) -> _Ranked:
    """The editor's pins as pairs, ranked like the pairs they stand beside (rule 6).

    A pin must name two reviewed tools of one category, at least one new, each in one pin only:
    `digest.editorial.edits` checks that before a pin is stored or used.
    """
    new_slugs = {tool.slug: tool for tool in fresh}
    by_slug = {**{tool.slug: tool for tool in settled}, **new_slugs}
    ranked: _Ranked = []
    used: set[str] = set()
    for first, second in pinned:
        x, y = by_slug.get(first), by_slug.get(second)
        if x is None or y is None or not x.reviews or not y.reviews:
            raise ValueError(f"pin {first}:{second} names a tool that cannot be paired")
        if category_key(x.category) != category_key(y.category) or {first, second} & used:
            raise ValueError(f"pin {first}:{second} crosses categories or reuses a tool")
        if first in new_slugs and second in new_slugs:
            (a, b), tier = _oriented(x, y), 0
        elif first in new_slugs or second in new_slugs:
            (a, b), tier = ((x, y) if first in new_slugs else (y, x)), 1
        else:
            raise ValueError(f"pin {first}:{second} holds no tool new this week")
        used.update((first, second))
        units = similarity_units(a, b)
        key = category_key(a.category)
        pair = Pair(a, b, labels[key], units / SIMILARITY_SCALE)
        ranked.append(((tier, -units, key, a.slug, b.slug), pair))
    return ranked


def _by_category(
    fresh: list[ToolRecord], settled: list[ToolRecord]
) -> tuple[dict[str, list[ToolRecord]], dict[str, list[ToolRecord]], dict[str, list[ToolRecord]]]:
    """Reviewed new tools, reviewed incumbents, and every tool, by category key."""
    new_by_key: dict[str, list[ToolRecord]] = defaultdict(list)
    old_by_key: dict[str, list[ToolRecord]] = defaultdict(list)
    everyone: dict[str, list[ToolRecord]] = defaultdict(list)
    for tools, reviewed in ((fresh, new_by_key), (settled, old_by_key)):
        for tool in tools:
            everyone[category_key(tool.category)].append(tool)
            if tool.reviews:
                reviewed[category_key(tool.category)].append(tool)
    return new_by_key, old_by_key, everyone


def _against_incumbents(
    key: str,
    label: str,
    group: list[ToolRecord],
    profiles: list[_Profile],
    rivals: list[ToolRecord],
    rival_profiles: list[_Profile],
    paired: set[str],
    previous_matchups: frozenset[frozenset[str]],
) -> _Ranked:
    """Each new tool still unpaired meets its most similar incumbent not met before (rule 4)."""
    options: list[tuple[tuple[int, float, int, str, str], int, int]] = []
    for i, tool in enumerate(group):
        if tool.slug in paired:
            continue
        for r, rival in enumerate(rivals):
            if frozenset((tool.slug, rival.slug)) in previous_matchups:
                continue
            units = _units(profiles[i], rival_profiles[r])
            share, count = _strength(rival)
            options.append(((-units, -share, -count, rival.slug, tool.slug), i, r))
    options.sort()
    ranked: _Ranked = []
    taken: set[int] = set()
    for rank, i, r in options:
        if group[i].slug in paired or r in taken:
            continue
        a, b = group[i], rivals[r]
        ranked.append(
            ((1, rank[0], key, a.slug, b.slug), Pair(a, b, label, -rank[0] / SIMILARITY_SCALE))
        )
        paired.add(a.slug)
        taken.add(r)
    return ranked
