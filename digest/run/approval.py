"""Approval before sending (DIGEST_APPROVAL=required): what is approved, and what a run decides.

An approval is of one exact content: the SHA-256 of the composed digest (edits applied) and of
the edits themselves. An edit or a catalog change after it gives another hash, which has no
answer yet, so the run waits again. Answers are rows of `approval` (who, when, a note); for one
hash the latest answer counts, for a run that did not wait.

A run that waits writes a `waiting` row with its flow run id. Whoever answers it first decides,
whether `digest approve` or the form on the paused run in the Prefect UI: the answer's row and
the end of the wait are one step, an update of the waiting row that only one answer can make
(its `note`, empty while the run waits, becomes `answered:<row id>`, or `expired` when the run
gave up). Every other answer is still recorded, and told which answer the run took. `digest
approve` answers the content as it is now, never a stale copy: a run that waits on older content
takes the answer too, and composes again to find it; the older content stays unanswered.

The flow (flows/approval.py) pauses and resumes; everything it decides with is here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine

from digest.content.compose import filter_for_categories
from digest.content.frozen import DigestContent
from digest.delivery import ledger
from digest.editorial.edits import EditSet, load_edits
from digest.errors import ApprovalError
from digest.models import APPROVAL_TABLE as APPROVAL
from digest.run.preparation import Edition, PreparedDigest, prepare_digest
from digest.run.report import md
from digest.weeks import IsoWeek

APPROVED, REJECTED, WAITING = "approved", "rejected", "waiting"


@dataclass(frozen=True)
class Decision:
    """One answer to "may this content go?"."""

    week: str
    content_hash: str
    approved: bool
    note: str
    by: str
    at: datetime

    def sentence(self) -> str:
        verb = "Approved" if self.approved else "Rejected"
        said = f': "{self.note}"' if self.note else ""
        return f"{verb} by {self.by} at {self.at:%Y-%m-%d %H:%M} UTC{said}"


@dataclass(frozen=True)
class Waiting:
    """A run's wait for an answer about one content: its `waiting` row, and how it ended."""

    row_id: int
    week: str
    flow_run_id: str
    content_hash: str
    since: datetime
    ended: str = ""  # empty while the run waits; else `answered:<row id>` or `expired`

    @property
    def answered(self) -> bool:
        return self.ended.startswith(_ANSWERED)


# A waiting row's note says how the wait ended; empty while the run waits.
_ANSWERED, EXPIRED = "answered:", "expired"


def content_hash(content: DigestContent, edits: EditSet) -> str:
    """The fingerprint an approval is given to."""
    payload = {"content": content.model_dump(mode="json"), "edits": edits.fingerprint()}
    encoded = json.dumps(payload, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(encoded).hexdigest()


def hash_of(engine: Engine, prepared: PreparedDigest) -> str:
    with engine.connect() as connection:
        edits = load_edits(connection, prepared.week)
    return content_hash(prepared.content, edits)


def decision_for(engine: Engine, *, week: str, content_hash: str) -> Decision | None:
    """The latest answer given to exactly this content of the week, if any."""
    with engine.connect() as connection:
        row = connection.execute(
            select(APPROVAL)
            .where(
                APPROVAL.c.week == week,
                APPROVAL.c.content_hash == content_hash,
                APPROVAL.c.decision.in_((APPROVED, REJECTED)),
            )
            .order_by(APPROVAL.c.id.desc())
            .limit(1)
        ).first()
    return _decision_of(row) if row is not None else None


def _decision_of(row: Any) -> Decision:
    """An `approval` row that answers (approved or rejected) as a Decision."""
    return Decision(
        week=row.week,
        content_hash=row.content_hash,
        approved=row.decision == APPROVED,
        note=row.note,
        by=row.decided_by,
        at=row.decided_at,
    )


def _insert_decision(connection: Connection, decision: Decision, *, flow_run_id: str | None) -> int:
    inserted = connection.execute(
        insert(APPROVAL).values(
            week=decision.week,
            content_hash=decision.content_hash,
            decision=APPROVED if decision.approved else REJECTED,
            note=decision.note,
            decided_by=decision.by,
            decided_at=decision.at,
            flow_run_id=flow_run_id,
        )
    )
    return _row_id(inserted)


def _row_id(inserted: Any) -> int:
    """The id of the row an insert made."""
    key = inserted.inserted_primary_key
    assert key is not None
    return int(key[0])


def record_decision(
    engine: Engine, decision: Decision, *, flow_run_id: str | None = None
) -> Decision:
    """An answer for whichever run asks about its content next (no run waits for it)."""
    with engine.begin() as connection:
        _insert_decision(connection, decision, flow_run_id=flow_run_id)
    return decision


def record_waiting(
    engine: Engine, *, week: str, content_hash: str, flow_run_id: str, at: datetime
) -> Waiting:
    with engine.begin() as connection:
        inserted = connection.execute(
            insert(APPROVAL).values(
                week=week,
                content_hash=content_hash,
                decision=WAITING,
                note="",
                decided_by="",
                decided_at=at,
                flow_run_id=flow_run_id,
            )
        )
    row_id = _row_id(inserted)
    return Waiting(
        row_id=row_id, week=week, flow_run_id=flow_run_id, content_hash=content_hash, since=at
    )


def waiting_run(
    engine: Engine, *, week: str, now: datetime, timeout_minutes: int
) -> Waiting | None:
    """The week's latest wait for an answer, open or answered (a run that gave up, or whose
    time is up, waits for nothing)."""
    with engine.connect() as connection:
        row = connection.execute(
            select(APPROVAL)
            .where(APPROVAL.c.week == week, APPROVAL.c.decision == WAITING)
            .order_by(APPROVAL.c.id.desc())
            .limit(1)
        ).first()
    if row is None or row.flow_run_id is None or row.note == EXPIRED:
        return None
    if row.decided_at + timedelta(minutes=timeout_minutes) < now:
        return None
    return Waiting(
        row_id=row.id,
        week=row.week,
        flow_run_id=row.flow_run_id,
        content_hash=row.content_hash,
        since=row.decided_at,
        ended=row.note,
    )


def _close_wait(connection: Connection, waiting: Waiting, outcome: str) -> bool:
    """End the wait with `outcome`, unless something ended it first: the one decision."""
    ended = connection.execute(
        update(APPROVAL)
        .where(APPROVAL.c.id == waiting.row_id, APPROVAL.c.note == "")
        .values(note=outcome)
    )
    return bool(ended.rowcount)


def answer_wait(
    engine: Engine, waiting: Waiting, decision: Decision
) -> tuple[bool, Decision | None]:
    """Record `decision` for the waiting run and try to end its wait with it.

    (True, decision) when this answer is the one the run takes; else (False, the answer it took
    instead), or (False, None) when the run had stopped waiting. Either way `decision` stays
    recorded: the next run that composes the same content finds it.
    """
    with engine.begin() as connection:
        row_id = _insert_decision(connection, decision, flow_run_id=waiting.flow_run_id)
        if _close_wait(connection, waiting, f"{_ANSWERED}{row_id}"):
            return True, decision
    return False, taken_answer(engine, waiting)


def give_up_waiting(engine: Engine, waiting: Waiting) -> Decision | None:
    """The run's time is up: end the wait unanswered, unless an answer came first (returned)."""
    with engine.begin() as connection:
        if _close_wait(connection, waiting, EXPIRED):
            return None
    return taken_answer(engine, waiting)


def taken_answer(engine: Engine, waiting: Waiting) -> Decision | None:
    """The answer that ended the wait, if an answer did."""
    with engine.connect() as connection:
        note = connection.execute(
            select(APPROVAL.c.note).where(APPROVAL.c.id == waiting.row_id)
        ).scalar_one()
        if not note.startswith(_ANSWERED):
            return None
        row = connection.execute(
            select(APPROVAL).where(APPROVAL.c.id == int(note.removeprefix(_ANSWERED)))
        ).one()
    return _decision_of(row)


class ApprovalFrozenError(ApprovalError):
    """The week's content froze when its run began sending: an answer changes nothing."""


def current_hash(engine: Engine, edition: Edition, week: IsoWeek, *, waited: bool) -> str:
    """The hash of the week's content as it is now, composed as the run composes it.

    Refused once the content is frozen, unless a run waits for it (`waited`): a frozen week
    sends what froze, whatever anyone answers.
    """
    with engine.connect() as connection:
        frozen = ledger.find_digest(connection, str(week))
    if frozen is not None and not waited:
        raise ApprovalFrozenError(
            f"The content of {week} froze when its run began sending on "
            f"{frozen['created_at']:%Y-%m-%d %H:%M} UTC, so an answer changes nothing: what it "
            "sends no longer depends on an approval. See what was sent with `digest status "
            f"--week {week}`."
        )
    prepared = prepare_digest(engine, edition, week, freeze=False)
    if prepared.content.is_empty:
        raise ApprovalError(
            f"{week} has no new tools, so there is no digest to approve. Check the week, or "
            "import the catalog first."
        )
    return hash_of(engine, prepared)


class Handover(StrEnum):
    """What became of an answer of `digest approve`."""

    RESUMED = "resumed"  # it ended the run's wait, and resumed the run through the Prefect API
    TAKEN = "taken"  # it ended the run's wait; the run saw it first and resumed itself
    RECORDED = "recorded"  # it ended the run's wait; the run takes it at its next look
    GONE = "gone"  # it ended the wait of a run that had died: the next run finds it
    UNREACHABLE = "unreachable"  # it ended the run's wait; the Prefect API did not answer
    ANSWERED_BEFORE = "answered-before"  # the run had already taken another answer
    NO_RUN = "no-run"  # no run waits: the next run finds it


@dataclass(frozen=True)
class Answer:
    """What `digest approve` did: the decision (about the content as it is now), the run that
    waited, if one did, what became of the answer, and the answer that run took."""

    decision: Decision
    waiting: Waiting | None
    handover: Handover
    taken: Decision | None = None

    @property
    def content_changed(self) -> bool:
        """The run waited on other content than the answer covers (an edit came between)."""
        return self.waiting is not None and self.waiting.content_hash != self.decision.content_hash


def answer_now(
    engine: Engine,
    edition: Edition,
    week: IsoWeek,
    *,
    decision: Decision,
    timeout_minutes: int,
    resume: Callable[[Waiting, Decision], Handover] | None = None,
) -> Answer:
    """Answer about the week's content as it is now (the decision's hash is set here).

    With a run waiting, the answer is recorded for it and ends its wait in the same step, unless
    another answer did first (then, or when the week's latest wait was answered already, the
    Answer names the answer the run took). The run that takes it is resumed through `resume`
    (the Prefect API, which says whether it resumed the run, the run had resumed itself, or the
    run is gone) or, without one, finds the answer at its next look. Either way it composes
    again, finds the current content answered and freezes it without waiting again; the content
    it waited on, which nobody answered, stays unanswered.
    """
    waiting = waiting_run(engine, week=str(week), now=decision.at, timeout_minutes=timeout_minutes)
    is_open = waiting is not None and not waiting.ended
    # A run that waits, or took an answer a moment ago (and may have frozen it since), is told
    # about, not refused: racing approvers learn which answer it took.
    now_hash = current_hash(engine, edition, week, waited=waiting is not None)
    decision = replace(decision, week=str(week), content_hash=now_hash)
    if waiting is None:
        record_decision(engine, decision)
        return Answer(decision, None, Handover.NO_RUN)
    if is_open:
        ended, taken = answer_wait(engine, waiting, decision)
    else:  # the run took an answer already: this one is recorded, for a later run
        record_decision(engine, decision)
        ended, taken = False, taken_answer(engine, waiting)
    if not ended:
        if taken is None:  # it gave up waiting just before: the next run finds this answer
            return Answer(decision, None, Handover.NO_RUN)
        return Answer(decision, waiting, Handover.ANSWERED_BEFORE, taken)
    if resume is None:
        return Answer(decision, waiting, Handover.RECORDED, decision)
    return Answer(decision, waiting, resume(waiting, decision), decision)


def recipients_by_variant(engine: Engine, content: DigestContent) -> list[tuple[str, int, bool]]:
    """(variant, active subscribers, whether they get mail), the every-category variant first."""
    with engine.connect() as connection:
        counts = ledger.active_by_variant(connection)
    out = []
    for key in sorted(counts):
        shows = filter_for_categories(content, key.split(";") if key else []) is not None
        out.append((key.replace(";", ", ") or "every category", counts[key], shows))
    return out


def approval_markdown(
    content: DigestContent,
    *,
    digest_hash: str,
    recipients: list[tuple[str, int, bool]],
    decision: Decision | None,
) -> str:
    """The preview an approver reads in the Prefect UI, and the answer once given."""
    week = content.week
    if decision is None:
        status = "Waiting for approval: nothing is sent until someone approves this content."
    else:
        status = decision.sentence()
    lines = [f"# verdict-digest {week}: approval", "", f"**{md(status)}**", ""]
    lines += [f"Content: `{digest_hash[:12]}`", "", f"Subject: {md(content.subject)}", ""]
    lines += [f"Editor's note: {md(content.intro) if content.intro else 'none'}", ""]
    lines += ["## Head-to-heads", ""]
    if content.pairs:
        lines += ["| # | new | versus | category | verdict |", "|---|---|---|---|---|"]
        lines += [
            f"| {i} | {md(p.a.slug)} | {md(p.b.slug)} | {md(p.category)} | {md(p.verdict)} |"
            for i, p in enumerate(content.pairs, start=1)
        ]
    else:
        lines.append("None this week.")
    also = ", ".join(md(t.slug) for t in content.also_new) or "none"
    lines += ["", f"Also new: {also}", "", "## Excluded", ""]
    if content.excluded:
        lines += ["| slug | reason |", "|---|---|"]
        lines += [f"| {md(e.slug)} | {md(e.reason)} |" for e in content.excluded]
    else:
        lines.append("Nothing excluded.")
    if content.flags:
        lines += ["", "## Editor flags", ""] + [f"- {md(flag)}" for flag in content.flags]
    lines += ["", "## Recipients by variant", "", "| variant | subscribers | gets mail |"]
    lines.append("|---|---|---|")
    lines += [f"| {md(k)} | {n} | {'yes' if s else 'no'} |" for k, n, s in recipients]
    lines += [
        "",
        "## See it and answer",
        "",
        f"Render it locally: `digest preview --week {week} --serve` (or `--out DIR`).",
        "",
        "Answer here (Resume, approve or reject, with a note) or from a shell: "
        f"`digest approve --week {week} [--reject] [--note TEXT]`. An edit or a catalog change "
        "after the answer voids it, and the run waits again.",
    ]
    return "\n".join(lines) + "\n"
