"""`digest edit` as one step: read the week's edits, apply the asked changes, check, store.

A command's changes are checked together against the week as it is now and stored in one
transaction, or refused together with the sentence of the first problem: nothing half-done.
Once the week's content is frozen (its run began), every change is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection, Engine

from digest.delivery import ledger
from digest.editorial.applying import NOT_APPLIED, check_change, compose_edited
from digest.editorial.edits import (
    REASON_LIMIT,
    VERDICT_LIMIT,
    EditSet,
    checked_fields,
    checked_intro,
    checked_subject,
    checked_text,
    load_edits,
    lock_edits,
    pair_key,
    split_pair,
    store_edits,
)
from digest.errors import EditError, EditsFrozenError
from digest.run.approval import Decision, content_hash, decision_for
from digest.run.preparation import Edition, week_facts
from digest.weeks import IsoWeek

# What --clear FIELD names, and the request's attribute that sets that field.
_SETTERS = {
    "intro": "intro",
    "subject": "subject",
    "pin": "pins",
    "exclude": "excludes",
    "verdict": "verdicts",
    "lead": "lead",
}


@dataclass(frozen=True)
class EditRequest:
    """The changes one `digest edit` asks for, as typed."""

    by: str
    intro: str | None = None
    subject: str | None = None
    pins: list[str] = field(default_factory=list)
    excludes: list[str] = field(default_factory=list)
    verdicts: list[str] = field(default_factory=list)
    lead: str | None = None
    clear: bool = False
    clear_fields: tuple[str, ...] = ()  # with `clear`: none (or "all") removes every edit

    @property
    def changes_anything(self) -> bool:
        # An explicit "" is a change (refused as empty), not an absent option.
        return self.clear or any(
            getattr(self, name) not in (None, []) for name in _SETTERS.values()
        )

    def cleared(self) -> tuple[str, ...] | None:
        """The fields --clear removes (None: every edit), refusing one also set here."""
        fields = checked_fields(self.clear_fields)
        given = [
            name for name, setter in _SETTERS.items() if getattr(self, setter) not in (None, [])
        ]
        if fields is None and given:
            raise EditError(
                f"--clear alone removes every edit of the week, and --{given[0]} in the same "
                f"command would be the only one left. Name what to clear (--clear pin "
                f"exclude ...), or clear first and give --{given[0]} in a second command. "
                "Nothing was changed."
            )
        for name in fields or ():
            if getattr(self, _SETTERS[name]) not in (None, []):
                raise EditError(
                    f"--clear {name} and --{name} in one command contradict each other. To "
                    f"replace the {name}, give --{name} alone; to remove it, --clear {name} "
                    "alone. Nothing was changed."
                )
        return fields


@dataclass(frozen=True)
class Edited:
    """What `edit_week` did: the `--show` document, and the approval the edit voided."""

    document: dict[str, Any]
    voided: Decision | None = None
    sends_nothing: bool = False  # the week has no new tools: its run sends no email to edit
    excluded_them: bool = False  # ... because the edits exclude every one it had


def refuse_if_frozen(connection: Connection, week: str) -> None:
    frozen = ledger.find_digest(connection, week)
    if frozen is None:
        return
    raise EditsFrozenError(
        f"The digest of {week} is frozen: its run began at "
        f"{frozen['created_at']:%Y-%m-%d %H:%M} UTC, and what it sends no longer changes, so "
        "edits would reach nobody. If nothing has been sent, `digest run --week "
        f"{week} --refreeze` composes it again from the catalog and the edits as they are; "
        "otherwise make the change in next week's digest."
    )


def _exclusion(text: str) -> tuple[str, str]:
    slug, _, reason = text.partition("=")
    slug = slug.strip()
    if not slug:
        raise EditError(
            f"--exclude {text!r} names no tool. Write --exclude SLUG or --exclude SLUG=REASON."
        )
    if not reason.strip():
        return slug, ""
    return slug, checked_text(
        reason, option="--exclude's reason", limit=REASON_LIMIT, one_line=True
    )


def _verdict(text: str) -> tuple[str, str, str]:
    pair, sep, verdict = text.partition("=")
    if not sep:
        raise EditError(
            f"--verdict {text!r} gives no verdict line. Write --verdict A:B=TEXT, such as "
            '--verdict code-llama-4:devin-2="Both ship; Devin 2 for teams".'
        )
    a, b = split_pair(pair, "--verdict")
    return a, b, checked_text(verdict, option="--verdict", limit=VERDICT_LIMIT, one_line=True)


def edited(before: EditSet, request: EditRequest, *, at: datetime) -> EditSet:
    """`before` with the request's changes: clearing first, then each change in turn."""
    after = before.without(request.cleared()) if request.clear else before
    by = request.by
    for text in request.excludes:
        slug, reason = _exclusion(text)
        after = after.with_edit("exclude", slug, reason, by=by, at=at)
    for text in request.pins:
        a, b = split_pair(text, "--pin")
        after = after.with_edit("pin", pair_key(a, b), f"{a}:{b}", by=by, at=at)
    for text in request.verdicts:
        a, b, verdict = _verdict(text)
        after = after.with_edit("verdict", pair_key(a, b), verdict, by=by, at=at)
    if request.lead is not None:
        a, b = split_pair(request.lead, "--lead")
        after = after.with_edit("lead", "", f"{a}:{b}", by=by, at=at)
    if request.subject is not None:
        after = after.with_edit("subject", "", checked_subject(request.subject), by=by, at=at)
    if request.intro is not None:
        after = after.with_edit("intro", "", checked_intro(request.intro), by=by, at=at)
    return after


# Tries of an edit that other editors' edits keep overtaking before it is stored: every try
# lets at least one of the editors at once store theirs, so this many editors at once all land.
EDIT_TRIES = 20


def edit_week(
    engine: Engine, edition: Edition, week: IsoWeek, request: EditRequest, *, now: datetime
) -> Edited:
    """Apply `request` to the week's edits: the `--show` document of the result, and the
    approval of the content before it that the change voided, if any.

    Refused (EditsFrozenError) once the week is frozen; an invalid change (EditError) stores
    nothing. Two editors at once lose nothing: an edit is stored only onto the edits it was
    checked against, and checked again onto another's that landed first.
    """
    for _ in range(EDIT_TRIES):
        outcome = _edit_once(engine, edition, week, request, now=now)
        if outcome is not None:
            return outcome
    raise EditError(
        f"The edits of {week} kept changing while this one was checked ({EDIT_TRIES} tries): "
        "other editors are at work. Look at them with `digest edit --week "
        f"{week} --show`, then run the command again."
    )


def _edit_once(
    engine: Engine, edition: Edition, week: IsoWeek, request: EditRequest, *, now: datetime
) -> Edited | None:
    """`edit_week`'s one try; None when another edit was stored after this one read them."""
    with engine.connect() as connection:
        if request.changes_anything:
            refuse_if_frozen(connection, str(week))
        before = load_edits(connection, str(week))
        frozen = ledger.find_digest(connection, str(week)) is not None
    facts = week_facts(engine, edition, week)
    was, stale = compose_edited(facts, before, site_url=edition.site_url, zone=edition.zone)
    if not request.changes_anything:
        return Edited(before.as_json() | {"frozen": frozen, "not_applied": stale})
    after = edited(before, request, at=now)
    content = check_change(facts, before, after, site_url=edition.site_url, zone=edition.zone)
    was_hash, now_hash = content_hash(was, before), content_hash(content, after)
    approved = decision_for(engine, week=str(week), content_hash=was_hash)
    with engine.begin() as connection:
        lock_edits(connection, str(week))
        refuse_if_frozen(connection, str(week))  # a run may have frozen it meanwhile
        if load_edits(connection, str(week)).edits != before.edits:
            return None
        store_edits(connection, after)
    stale = [flag for flag in content.flags if flag.startswith(NOT_APPLIED)]
    document = after.as_json() | {"frozen": False, "not_applied": stale}
    voided = approved if approved and approved.approved and was_hash != now_hash else None
    excluded_them = content.is_empty and any(t.slug in after.excluded for t in facts.selection.new)
    return Edited(document, voided, sends_nothing=content.is_empty, excluded_them=excluded_them)
