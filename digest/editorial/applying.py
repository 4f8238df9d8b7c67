"""How a week's edits change its content, and the sentence for every edit that cannot apply.

Order: exclusions leave the selection first; pins are paired next and the matching pairs the
rest around them (`digest.content.pairing`, rule 6); then the verdict lines, the lead pair, the
subject and the editor's note change the composed content.

The same rules check an edit before it is stored (`check_change`, which refuses it with the
sentence) and whenever content is composed: an edit the catalog has since made impossible (a
tool gone, a pair no longer formed) is left out and named in the content's editor flags.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC
from zoneinfo import ZoneInfo

from digest.catalog.records import ToolRecord, category_key
from digest.content.compose import build_content, preheader_line, subject_line
from digest.content.frozen import DigestContent, Exclusion
from digest.content.pairing import pair_tools
from digest.content.selection import WeekSelection
from digest.editorial.edits import EditSet, pair_key
from digest.errors import EditError
from digest.weeks import week_of

NOT_APPLIED = "Editor's edit not applied: "


@dataclass(frozen=True)
class WeekFacts:
    """What edits are checked against: the week's selection and the match-ups already sent."""

    selection: WeekSelection
    history: frozenset[frozenset[str]]  # canonical slugs of head-to-heads sent in earlier weeks
    # Every catalog slug with the week it was added, to say where a slug of another week is.
    catalog_weeks: Mapping[str, str] = field(default_factory=dict)

    @property
    def week(self) -> str:
        return str(self.selection.week)


def catalog_weeks(tools: Iterable[ToolRecord], zone: ZoneInfo) -> dict[str, str]:
    """Each catalog slug and the ISO week it was added in."""
    # Stored times are UTC; a naive one can only have come from there.
    utc = {t.slug: t.added_at.replace(tzinfo=t.added_at.tzinfo or UTC) for t in tools}
    return {slug: str(week_of(moment, zone)) for slug, moment in utc.items()}


def _unknown(slug: str, facts: WeekFacts, candidates: Iterable[str]) -> str:
    """Why `slug` is not one of `candidates`, and where the editor can find the right one."""
    pool = {c.lower(): c for c in candidates}
    wanted = slug.lower()
    if wanted in pool:
        return f"{slug} is not a tool of {facts.week}; slugs are lowercase: {pool[wanted]}"
    in_catalog = {s.lower(): w for s, w in facts.catalog_weeks.items()}
    added = in_catalog.get(wanted)
    if added is not None and added != facts.week:
        return f"{slug} was added in {added}, not in {facts.week}, so it is not a tool of it"
    near = [pool[n] for n in difflib.get_close_matches(wanted, sorted(pool), n=3, cutoff=0.6)]
    if near:
        return f"{slug} is not a tool of {facts.week}. The closest slugs of the week: " + (
            ", ".join(near)
        )
    where = "" if added is not None else ", nor in the catalog"
    return (
        f"{slug} is not a tool of {facts.week}{where}; `digest preview --week {facts.week} "
        "--format json` lists the week's tools"
    )


def _without_excluded(facts: WeekFacts, edits: EditSet, problems: list[str]) -> WeekSelection:
    """The selection with the editor's exclusions moved to `excluded`, with their reasons."""
    selection = facts.selection
    week_slugs = {t.slug for t in (*selection.new, *selection.pending, *selection.incumbents)}
    gone: list[Exclusion] = []
    for slug, reason in edits.excluded.items():
        if slug in week_slugs:
            gone.append(Exclusion(slug=slug, reason=reason))
        else:
            problems.append(f"--exclude {slug}: " + _unknown(slug, facts, week_slugs) + ".")
    dropped = {e.slug for e in gone}

    def kept(tools: tuple[ToolRecord, ...]) -> tuple[ToolRecord, ...]:
        return tuple(t for t in tools if t.slug not in dropped)

    return replace(
        selection,
        new=kept(selection.new),
        pending=kept(selection.pending),
        incumbents=kept(selection.incumbents),
        excluded=tuple(sorted((*selection.excluded, *gone), key=lambda e: (e.slug, e.reason))),
    )


def _why_not_pairable(slug: str, facts: WeekFacts, edits: EditSet) -> str:
    selection = facts.selection
    if slug in edits.excluded:
        return f"{slug} is excluded from {facts.week} (--exclude); remove that with --clear exclude"
    unreviewed = (*selection.pending, *(t for t in selection.incumbents if not t.reviews))
    if any(t.slug == slug for t in unreviewed):
        return f"{slug} has no panel reviews yet, so it cannot be in a head-to-head"
    for exclusion in selection.excluded:
        if exclusion.slug == slug:
            return f"{slug} is left out of {facts.week} ({exclusion.reason})"
    pool = [t.slug for t in (*selection.new, *selection.incumbents) if t.reviews]
    return _unknown(slug, facts, pool)


def _pin_problem(
    pin: tuple[str, str], pool: dict[str, ToolRecord], new: Collection[str], facts: WeekFacts
) -> str | None:
    """Why `pin` cannot be a head-to-head of the week, or None."""
    a, b = pin
    missing = [slug for slug in pin if slug not in pool]
    if missing:
        return None  # named by the caller, which knows the edits
    if a not in new and b not in new:
        return (
            f"neither {a} nor {b} is new in {facts.week}: a head-to-head compares a tool new "
            "that week with another new tool or an established one"
        )
    ca, cb = pool[a].category, pool[b].category
    if category_key(ca) != category_key(cb):
        same = sorted(
            s for s, t in pool.items() if category_key(t.category) == category_key(ca) and s != a
        )
        hint = f" ({', '.join(same[:5])})" if same else ""
        return (
            f"{a} is in {ca!r} and {b} in {cb!r}, and a head-to-head compares tools of one "
            f"category; pin {a} against a tool of {ca!r}{hint}"
        )
    if frozenset(pin) in facts.history:
        return (
            f"{a} and {b} already met in an earlier digest, and a match-up readers have had is "
            "never repeated; pin another pair"
        )
    return None


def _usable_pins(
    facts: WeekFacts, selection: WeekSelection, edits: EditSet, problems: list[str]
) -> list[tuple[str, str]]:
    """The pins that can be paired this week; each other one's reason goes to `problems`."""
    pool = {t.slug: t for t in (*selection.new, *selection.incumbents) if t.reviews}
    new = {t.slug for t in selection.new}
    usable: list[tuple[str, str]] = []
    taken: dict[str, str] = {}
    for pin in edits.pins:
        label = f"--pin {pin[0]}:{pin[1]}: "
        missing = [slug for slug in pin if slug not in pool]
        if missing:
            problems.append(label + _why_not_pairable(missing[0], facts, edits) + ".")
            continue
        problem = _pin_problem(pin, pool, new, facts)
        clash = next((slug for slug in pin if slug in taken), None)
        if problem is None and clash is not None:
            problem = (
                f"{clash} is already pinned in {taken[clash]}, and a tool is in one head-to-head "
                "at most; keep one of the two pins (a stored one goes with --clear pin)"
            )
        if problem is not None:
            problems.append(label + problem + ".")
            continue
        usable.append(pin)
        taken.update({slug: f"{pin[0]}:{pin[1]}" for slug in pin})
    return usable


def _pairs_listed(content: DigestContent) -> str:
    listed = ", ".join(f"{p.a.slug}:{p.b.slug}" for p in content.pairs)
    return f"its pairs are {listed}" if listed else "it has no head-to-heads"


def _text_edits(content: DigestContent, edits: EditSet, problems: list[str]) -> DigestContent:
    """Verdict lines, the lead pair, the subject and the editor's note."""
    pairs = list(content.pairs)
    index = {pair_key(p.a.slug, p.b.slug): i for i, p in enumerate(pairs)}
    for key, verdict in edits.verdicts.items():
        if key in index:
            pairs[index[key]] = pairs[index[key]].model_copy(update={"verdict": verdict})
        else:
            problems.append(
                f"--verdict {key}: {key} is not a head-to-head of {content.week}'s digest "
                f"({_pairs_listed(content)}); pin it first with --pin {key}."
            )
    lead = edits.lead
    if lead is not None:
        key = pair_key(*lead)
        if key in index:
            pairs.insert(0, pairs.pop(index[key]))
        else:
            problems.append(
                f"--lead {lead[0]}:{lead[1]}: that pair is not a head-to-head of "
                f"{content.week}'s digest ({_pairs_listed(content)}); pin it first with "
                f"--pin {lead[0]}:{lead[1]}."
            )
    subject = edits.subject
    return content.model_copy(
        update={
            "pairs": pairs,
            "subject": subject or subject_line(pairs, content.also_new),
            "subject_by_editor": subject is not None,
            "preheader": preheader_line(pairs, content.also_new),
            "intro": edits.intro,
        }
    )


def compose_edited(
    facts: WeekFacts, edits: EditSet, *, site_url: str, zone: ZoneInfo
) -> tuple[DigestContent, list[str]]:
    """The week's content with its edits, and a sentence for each edit that could not apply."""
    problems: list[str] = []
    selection = _without_excluded(facts, edits, problems)
    pins = _usable_pins(facts, selection, edits, problems)
    pairing = pair_tools(
        selection.new, selection.incumbents, previous_matchups=facts.history, pinned=pins
    )
    content = build_content(selection, pairing, site_url=site_url, zone=zone)
    content = _text_edits(content, edits, problems)
    if problems:
        flags = [*content.flags, *(f"{NOT_APPLIED}{p}" for p in problems)]
        content = content.model_copy(update={"flags": flags})
    return content, problems


def check_change(
    facts: WeekFacts, before: EditSet, after: EditSet, *, site_url: str, zone: ZoneInfo
) -> DigestContent:
    """The content with `after`'s edits, or an EditError naming what the change breaks.

    Only problems the change brings are refused: an edit the catalog made stale earlier does not
    block an unrelated one (it stays in the editor flags).
    """
    _, known = compose_edited(facts, before, site_url=site_url, zone=zone)
    content, problems = compose_edited(facts, after, site_url=site_url, zone=zone)
    fresh = [p for p in problems if p not in known]
    if fresh:
        _refuse_excluding_a_pinned_tool(before, after)
        _refuse_excluding_what_edits_hold(before, after)
        _refuse_unpinning_what_edits_hold(before, after)
        raise EditError(f"{fresh[0]} Nothing was changed.")
    return content


def _refuse_unpinning_what_edits_hold(before: EditSet, after: EditSet) -> None:
    """Blame the removed pin, not the verdict or lead that stay on its pair."""
    kept = {pair_key(*pin) for pin in after.pins}
    lead = pair_key(*after.lead) if after.lead else None
    for a, b in before.pins:
        key = pair_key(a, b)
        if key in kept:
            continue
        holding = [
            f"--{name}"
            for name, holds in (("verdict", key in after.verdicts), ("lead", key == lead))
            if holds
        ]
        if holding:
            fields = " ".join(option.removeprefix("--") for option in holding)
            raise EditError(
                f"--clear pin: {a}:{b} has {' and '.join(holding)} edits, which need the pin. "
                f"Clear them first (--clear {fields}), or all in one command: --clear pin "
                f"{fields}. Nothing was changed."
            )


def _refuse_excluding_what_edits_hold(before: EditSet, after: EditSet) -> None:
    """Blame the new exclusion, not the earlier verdict or lead whose pair it takes out."""
    newly = set(after.excluded) - set(before.excluded)
    lead = pair_key(*after.lead) if after.lead else None
    held = [("verdict", key) for key in after.verdicts if key in before.verdicts]
    held += [("lead", lead)] if lead is not None and after.lead == before.lead else []
    for name, key in held:
        slug = next((s for s in key.split(":") if s in newly), None)
        if slug is not None:
            raise EditError(
                f"--exclude {slug}: the --{name} edit of {key} names {slug}, and would name no "
                f"head-to-head once it is left out. Clear it first (--clear {name}), or keep "
                f"{slug}. Nothing was changed."
            )


def _refuse_excluding_a_pinned_tool(before: EditSet, after: EditSet) -> None:
    """Blame the new exclusion, not the pin that was there first, when they clash."""
    newly = set(after.excluded) - set(before.excluded)
    for a, b in (pin for pin in after.pins if pin in before.pins):
        slug = a if a in newly else b if b in newly else None
        if slug is not None:
            raise EditError(
                f"--exclude {slug}: {slug} is pinned in {a}:{b} (--pin), so it cannot be left "
                "out; remove the pin with --clear pin first, or exclude another tool. "
                "Nothing was changed."
            )
