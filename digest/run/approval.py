"""Approval before sending (DIGEST_APPROVAL=required): what is approved, and what a run decides.

An approval is of one exact content: the SHA-256 of the composed digest (edits applied) and of
the edits themselves. An edit or a catalog change after it gives another hash, which has no
answer yet, so the run waits again. Answers are rows of `approval` (who, when, a note); a run
that waits writes a `waiting` row with its flow run id, so `digest approve` knows which run to
resume; when none waits, the answer it records is found by the next run. `digest approve`
answers the content as it is now, never a stale copy: a run that waits on older content is
answered too (the row names its flow run), and composes again to find it; the older content
stays unanswered. For one hash the latest answer counts.

The flow (flows/approval.py) pauses and resumes; everything it decides with is here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

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
    """A run paused for an answer about one content."""

    flow_run_id: str
    content_hash: str
    since: datetime


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


def answer_to_run(engine: Engine, *, flow_run_id: str) -> Decision | None:
    """The answer recorded for a waiting run since it began to wait (by `digest approve`, when
    it could not reach the run through the API), whatever content it covers."""
    with engine.connect() as connection:
        began = connection.execute(
            select(APPROVAL.c.id)
            .where(APPROVAL.c.flow_run_id == flow_run_id, APPROVAL.c.decision == WAITING)
            .order_by(APPROVAL.c.id.desc())
            .limit(1)
        ).scalar()
        row = connection.execute(
            select(APPROVAL)
            .where(
                APPROVAL.c.flow_run_id == flow_run_id,
                APPROVAL.c.decision.in_((APPROVED, REJECTED)),
                APPROVAL.c.id > (began or 0),
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


def record_decision(
    engine: Engine, decision: Decision, *, flow_run_id: str | None = None
) -> Decision:
    with engine.begin() as connection:
        connection.execute(
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
    return decision


def record_waiting(
    engine: Engine, *, week: str, content_hash: str, flow_run_id: str, at: datetime
) -> None:
    with engine.begin() as connection:
        connection.execute(
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


def waiting_run(
    engine: Engine, *, week: str, now: datetime, timeout_minutes: int
) -> Waiting | None:
    """The run that waits for the week's answer: the latest row says so and has not timed out."""
    with engine.connect() as connection:
        row = connection.execute(
            select(APPROVAL).where(APPROVAL.c.week == week).order_by(APPROVAL.c.id.desc()).limit(1)
        ).first()
    if row is None or row.decision != WAITING or row.flow_run_id is None:
        return None
    if row.decided_at + timedelta(minutes=timeout_minutes) < now:
        return None
    return Waiting(flow_run_id=row.flow_run_id, content_hash=row.content_hash, since=row.decided_at)


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


@dataclass(frozen=True)
class Answer:
    """What `digest approve` did: the decision (about the content as it is now) and the run
    that waited, if one did, with whether it was resumed through the Prefect API."""

    decision: Decision
    waiting: Waiting | None
    resumed: bool

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
    resume: Callable[[Waiting, Decision], bool] | None = None,
) -> Answer:
    """Answer about the week's content as it is now (the decision's hash is set here).

    The answer is recorded for the current content only, marked for the waiting run if one
    waits: that run is resumed through `resume` (the Prefect API) when given, or finds the row
    by polling. Either way it composes again, finds the current content answered and freezes
    it without waiting again; the content it waited on, which nobody answered, stays unanswered.
    """
    waiting = waiting_run(engine, week=str(week), now=decision.at, timeout_minutes=timeout_minutes)
    now_hash = current_hash(engine, edition, week, waited=waiting is not None)
    decision = replace(decision, week=str(week), content_hash=now_hash)
    record_decision(engine, decision, flow_run_id=waiting.flow_run_id if waiting else None)
    if waiting is None:
        return Answer(decision, None, resumed=False)
    if resume is not None:
        if resume(waiting, decision):
            return Answer(decision, waiting, resumed=True)
        return Answer(decision, None, resumed=False)  # it stopped waiting: the next run finds it
    return Answer(decision, waiting, resumed=False)


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
