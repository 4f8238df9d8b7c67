"""A week's editorial edits: what an editor changed, who and when, stored until the week freezes.

Each edit is one row (`EditorialEdit`): the field, a key that tells apart the repeatable ones
(a pin's or a verdict's two slugs, sorted; an excluded slug) and the value (the text, the
editor's reason, the lead pair). An `EditSet` is the whole week's set, read and written at once,
so a command either applies every change it was given or none.

The rules that need the week's tools (is a slug a candidate, is a pair in the digest) live in
`digest.editorial.applying`; this module checks what text alone can tell.
"""

from __future__ import annotations

import getpass
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.engine import Connection

from digest.content.compose import SUBJECT_LIMIT
from digest.errors import EditError
from digest.models import EDIT_TABLE as EDIT
from digest.text import removed_characters

FIELDS = ("intro", "subject", "pin", "exclude", "verdict", "lead")
INTRO_LIMIT = 2000
VERDICT_LIMIT = 200
REASON_LIMIT = 300
EDITOR_REASON = "left out by the editor"


@dataclass(frozen=True)
class Edit:
    """One stored change: `key` is "" for intro, subject and lead."""

    field: str
    key: str
    value: str
    made_by: str
    made_at: datetime

    def as_json(self) -> dict[str, Any]:
        return {"by": self.made_by, "at": self.made_at.isoformat()}


def pair_key(a: str, b: str) -> str:
    """The order-free key of a pair of slugs."""
    return ":".join(sorted((a, b)))


def split_pair(text: str, option: str) -> tuple[str, str]:
    """ "A:B" as two slugs, or an EditError saying how to write it."""
    a, sep, b = text.partition(":")
    a, b = a.strip(), b.strip()
    if not sep or not a or not b or ":" in b:
        raise EditError(
            f"{option} {text!r} is not a pair. Write it as two slugs joined by a colon, "
            f"such as {option} code-llama-4:devin-2."
        )
    if a == b:
        raise EditError(f"{option} {text!r} pairs {a} with itself. Name two different tools.")
    return a, b


@dataclass(frozen=True)
class EditSet:
    """Every edit of one week; `with_edit` and `without` return a new set."""

    week: str
    edits: tuple[Edit, ...] = ()

    def _values(self, field: str) -> list[Edit]:
        return sorted((e for e in self.edits if e.field == field), key=lambda e: e.key)

    def _one(self, field: str) -> Edit | None:
        found = self._values(field)
        return found[0] if found else None

    @property
    def intro(self) -> str | None:
        edit = self._one("intro")
        return edit.value if edit else None

    @property
    def subject(self) -> str | None:
        edit = self._one("subject")
        return edit.value if edit else None

    @property
    def pins(self) -> list[tuple[str, str]]:
        return [split_pair(e.value, "--pin") for e in self._values("pin")]

    @property
    def excluded(self) -> dict[str, str]:
        return {e.key: e.value or EDITOR_REASON for e in self._values("exclude")}

    @property
    def verdicts(self) -> dict[str, str]:
        """Replacement verdict lines by pair key."""
        return {e.key: e.value for e in self._values("verdict")}

    @property
    def lead(self) -> tuple[str, str] | None:
        edit = self._one("lead")
        return split_pair(edit.value, "--lead") if edit else None

    def with_edit(self, field: str, key: str, value: str, *, by: str, at: datetime) -> EditSet:
        """The set with (field, key) set to `value`, replacing an earlier edit of it."""
        kept = tuple(e for e in self.edits if (e.field, e.key) != (field, key))
        return replace(self, edits=(*kept, Edit(field, key, value, by, at)))

    def without(self, fields: Iterable[str] | None) -> EditSet:
        """The set without the edits of `fields` (every edit when None)."""
        gone = None if fields is None else set(fields)
        kept = () if gone is None else tuple(e for e in self.edits if e.field not in gone)
        return replace(self, edits=kept)

    def fingerprint(self) -> list[list[str]]:
        """What the edits say, without who and when: part of what an approval approves."""
        return sorted([e.field, e.key, e.value] for e in self.edits)

    def as_json(self) -> dict[str, Any]:
        """The `digest edit --show` document."""
        intro, subject, lead = self._one("intro"), self._one("subject"), self._one("lead")
        return {
            "week": self.week,
            "intro": {"text": intro.value, **intro.as_json()} if intro else None,
            "subject": {"text": subject.value, **subject.as_json()} if subject else None,
            "pins": [_pair_json(e.value) | e.as_json() for e in self._values("pin")],
            "excluded": [
                {"slug": e.key, "reason": e.value or EDITOR_REASON, **e.as_json()}
                for e in self._values("exclude")
            ],
            "verdicts": [
                _pair_json(e.key) | {"verdict": e.value, **e.as_json()}
                for e in self._values("verdict")
            ],
            "lead": _pair_json(lead.value) | lead.as_json() if lead else None,
        }


def _pair_json(text: str) -> dict[str, str]:
    a, _, b = text.partition(":")
    return {"a": a, "b": b}


def load_edits(connection: Connection, week: str) -> EditSet:
    rows = connection.execute(select(EDIT).where(EDIT.c.week == week).order_by(EDIT.c.id))
    edits = tuple(Edit(r.field, r.key, r.value, r.made_by, r.made_at) for r in rows)
    return EditSet(week=week, edits=edits)


# PostgreSQL advisory lock key of the edits (the cancel budget's is 4711).
_EDITS_LOCK = 4712


def lock_edits(connection: Connection, week: str) -> None:
    """Hold the edits' write lock for the rest of the caller's transaction, so that reading
    them, comparing and storing happen as one: a write first on SQLite (a statement that
    writes takes the database's write lock, even when no row changes), an advisory lock on
    PostgreSQL."""
    if connection.dialect.name == "postgresql":
        connection.execute(text(f"SELECT pg_advisory_xact_lock({_EDITS_LOCK})"))
    else:
        connection.execute(update(EDIT).where(EDIT.c.week == week).values(week=EDIT.c.week))


def store_edits(connection: Connection, edits: EditSet) -> None:
    """Replace the week's stored edits with `edits` (in the caller's transaction)."""
    connection.execute(delete(EDIT).where(EDIT.c.week == edits.week))
    rows = [
        {
            "week": edits.week,
            "field": e.field,
            "key": e.key,
            "value": e.value,
            "made_by": e.made_by,
            "made_at": e.made_at,
        }
        for e in edits.edits
    ]
    if rows:
        connection.execute(insert(EDIT), rows)


NAME_LIMIT = 100
NOTE_LIMIT = 500


def editor_name(given: str | None) -> str:
    """--by, checked like any text the digest shows, else the login name."""
    if given is not None and given.strip():
        if "\n" in given.strip() or "\r" in given.strip():
            raise EditError("--by holds a line break. Give one name on one line.")
        if "\t" in given:  # a name is recorded as typed: a tab would hide in every listing
            raise EditError("--by holds a tab (U+0009). Give the name with spaces.")
        return checked_text(given, option="--by", limit=NAME_LIMIT, one_line=True)
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "unknown"


def checked_note(text: str) -> str:
    """`digest approve --note`: one line, checked like the editor's text; may be empty."""
    if not text.strip():
        return ""
    return checked_text(text, option="--note", limit=NOTE_LIMIT, one_line=True)


def checked_text(text: str, *, option: str, limit: int, one_line: bool) -> str:
    """Editor's text, trimmed; an EditError when it is empty, too long or holds controls."""
    bad = removed_characters(text)
    if bad:
        raise EditError(
            f"{option} holds characters no email may carry ({', '.join(bad)}: control, "
            "invisible, bidirectional or private-use characters). Type the text again without "
            "them."
        )
    cleaned = " ".join(text.split()) if one_line else text.strip()
    if not cleaned:
        raise EditError(f"{option} is empty. Give the text, or use --clear to remove it.")
    if len(cleaned) > limit:
        raise EditError(
            f"{option} is {len(cleaned)} characters long; it may hold at most {limit}. Shorten it."
        )
    return cleaned


def checked_subject(text: str) -> str:
    # Composed subjects stay under 70 characters so inboxes show them whole; so do editors'.
    return checked_text(text, option="--subject", limit=SUBJECT_LIMIT, one_line=True)


def checked_intro(text: str) -> str:
    # Lines inside a paragraph are joined when rendered; blank lines part paragraphs.
    lines = "\n".join(line.rstrip() for line in text.strip().splitlines())
    return checked_text(lines, option="--intro", limit=INTRO_LIMIT, one_line=False)


def checked_fields(fields: Iterable[str]) -> tuple[str, ...] | None:
    """--clear's FIELDs: the fields named, or None (every edit) for none or "all"."""
    named = tuple(dict.fromkeys(fields))
    for field in named:
        if field not in (*FIELDS, "all"):
            raise EditError(
                f"--clear {field!r} is not a field that can be edited. Use one or more of "
                f"{', '.join(FIELDS)}, or --clear alone to remove every edit of the week."
            )
    return None if not named or "all" in named else named
