"""Approval in the Prefect UI (DIGEST_APPROVAL=required): the pause, its form, and the resume.

Before anything is sent the run publishes the week's preview as an artifact, records that it
waits, and pauses with `ApprovalForm`, which the UI shows on the paused run (Resume). `digest
approve` records its answer and ends the wait in one step, then resumes the run through the API
when it can; the paused run looks in the database every 2 s as well, so whichever comes first,
the answer and the resume are one decision. What is approved (a hash), what is recorded and what
an answer means live in digest/run/approval.py; this module only pauses, resumes and hands over.
"""

# No `from __future__ import annotations`: Prefect builds the form from these annotations.

import time
from typing import Any, Literal
from uuid import UUID, uuid4

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.exceptions import ObjectNotFound
from prefect.input import Keyset, RunInput, keyset_from_paused_state
from prefect.runtime import flow_run
from prefect.states import Cancelled, Failed, Paused
from prefect.utilities.engine import propose_state_sync
from pydantic import Field, ValidationError
from sqlalchemy.engine import Engine

from digest.config import get_settings
from digest.db import ensure_schema
from digest.editorial.edits import NAME_LIMIT, NOTE_LIMIT
from digest.errors import ApprovalError, ApprovalRejectedError, NotApprovedError
from digest.run import approval, preparation
from digest.text import clean_text
from digest.weeks import IsoWeek, utcnow

_TASK_DEFAULTS: dict[str, Any] = {"persist_result": False, "cache_policy": NO_CACHE}
_POLL_SECONDS = 2.0
_SERVER_GRACE_SECONDS = 600
UI_APPROVER = "someone in the Prefect UI"


class ApprovalForm(RunInput):
    """Approve or reject this week's digest: the artifact `approval-<week>` shows what it sends."""

    # No default: a single Submit must never send to everyone; the reviewer picks one.
    decision: Literal["approve", "reject"] = Field(
        description="approve: send this content now. reject: send nothing; the run ends "
        "Cancelled, and the week waits for an edit and a new run."
    )
    note: str = Field(
        default="",
        max_length=NOTE_LIMIT,
        description="Why (optional): kept with the decision, and shown on the approval page "
        "and in the run's report.",
    )
    by: str = Field(
        default="",
        max_length=NAME_LIMIT,
        description="Your name: recorded as who decided, in the run's report (empty: "
        f'"{UI_APPROVER}").',
    )


@task(name="compose-for-approval", **_TASK_DEFAULTS)
def compose(week: IsoWeek, freeze: bool) -> preparation.PreparedDigest:
    settings = get_settings()
    edition = preparation.Edition.from_settings(settings)
    engine = ensure_schema(settings.database_url)
    return preparation.prepare_digest(engine, edition, week, freeze=freeze)


@task(name="approval-status", **_TASK_DEFAULTS)
def status(prepared: preparation.PreparedDigest) -> tuple[str, approval.Decision | None]:
    """The content's hash, and the answer already given to it, if any."""
    engine = ensure_schema(get_settings().database_url)
    digest_hash = approval.hash_of(engine, prepared)
    return digest_hash, approval.decision_for(engine, week=prepared.week, content_hash=digest_hash)


@task(name="publish-approval", **_TASK_DEFAULTS)
def publish(
    prepared: preparation.PreparedDigest, digest_hash: str, decision: approval.Decision | None
) -> None:
    settings = get_settings()
    engine = ensure_schema(settings.database_url)
    recipients = approval.recipients_by_variant(engine, prepared.content)
    create_markdown_artifact(
        key=f"approval-{prepared.week.lower()}",
        markdown=approval.approval_markdown(
            prepared.content, digest_hash=digest_hash, recipients=recipients, decision=decision
        ),
        description=f"verdict-digest {prepared.week}: the content waiting for approval",
    )


@task(name="record-answer", **_TASK_DEFAULTS)
def record(waiting: approval.Waiting, answer: ApprovalForm) -> approval.Decision:
    """The answer typed in the UI form, unless an answer of `digest approve` came first."""
    decision = approval.Decision(
        week=waiting.week,
        content_hash=waiting.content_hash,
        approved=answer.decision == "approve",
        note=_one_clean_line(answer.note),
        by=_one_clean_line(answer.by) or UI_APPROVER,
        at=utcnow(),
    )
    engine = ensure_schema(get_settings().database_url)
    ended, taken = approval.answer_wait(engine, waiting, decision)
    if ended or taken is None:
        return decision
    get_run_logger().warning(
        "The answer given in the form (%s) came after another, which this run takes: %s.",
        decision.sentence(),
        taken.sentence(),
    )
    return taken


def _one_clean_line(text: str) -> str:
    """The UI form's text, which no command line checked: controls and bidi marks dropped."""
    return " ".join(clean_text(text)[0].split())


def _wait(prepared: preparation.PreparedDigest, digest_hash: str) -> approval.Decision | None:
    """Publish, say that this run waits, pause; the answer, or None when time ran out."""
    settings = get_settings()
    engine = ensure_schema(settings.database_url)
    publish(prepared, digest_hash, None)
    waiting = approval.record_waiting(
        engine,
        week=prepared.week,
        content_hash=digest_hash,
        flow_run_id=str(flow_run.id),
        at=utcnow(),
    )
    get_run_logger().info(
        "%s waits for approval (content %s): answer on this run (Resume), or `digest approve "
        "--week %s`",
        prepared.week,
        digest_hash[:12],
        prepared.week,
    )
    return _pause_for_answer(engine, waiting, settings.approval_timeout_minutes * 60)


def _pause_for_answer(
    engine: Engine, waiting: approval.Waiting, timeout_seconds: int
) -> approval.Decision | None:
    """Prefect's blocking pause with input (as `pause_flow_run` does it), ending at our deadline.

    `pause_flow_run` gives the server and its own wait one timeout, and the server's expiry
    wins the race with a message of its own; here the server keeps the pause a little longer
    than we wait, so the run ends with our sentence, saying why nothing was sent. Every look
    asks the database first: an answer of `digest approve` ends the wait there (and resumes us
    through the API when it can); the form's answer arrives as a resume with input.
    """
    context = FlowRunContext.get()
    assert context is not None and context.flow_run is not None
    # A fresh key per pause: a retried run must never read the answer of an earlier pause.
    paused: State[Any] = Paused(
        timeout_seconds=timeout_seconds + _SERVER_GRACE_SECONDS,
        reschedule=False,
        pause_key=f"approval-{uuid4().hex}",
    )
    keyset = keyset_from_paused_state(paused)
    paused.state_details.run_input_keyset = {str(k): v for k, v in keyset.items()}
    with get_client(sync_client=True) as client:
        state = propose_state_sync(client=client, state=paused, flow_run_id=context.flow_run.id)
        if not state.is_paused():
            raise RuntimeError(f"Prefect did not pause the run: {state}")
        ApprovalForm.save(keyset)  # the form the UI shows on the paused run
        deadline = time.monotonic() + timeout_seconds
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(_POLL_SECONDS, left))
            answer = _answer_so_far(engine, waiting, client, keyset)
            if answer is not None:
                return answer
        taken = approval.give_up_waiting(engine, waiting)
        if taken is not None:  # answered in the last instant: the answer won
            _resume_self(client, waiting, taken)
        return taken


def _answer_so_far(
    engine: Engine, waiting: approval.Waiting, client: SyncPrefectClient, keyset: Keyset
) -> approval.Decision | None:
    taken = approval.taken_answer(engine, waiting)
    if taken is not None:  # `digest approve` answered: resume, unless it resumed us already
        _resume_self(client, waiting, taken)
        return taken
    run = client.read_flow_run(UUID(waiting.flow_run_id))
    if run.state is None or not run.state.is_running():
        return None
    try:
        form: ApprovalForm = ApprovalForm.load(keyset)  # type: ignore[assignment]
    except ValidationError as missing:  # resumed by force, without the form's answer
        raise ApprovalError(
            f"Flow run {waiting.flow_run_id} was resumed without an answer "
            f"({missing.error_count()} field(s) missing), so nothing was sent. Run the week "
            "again and answer with the form (Resume) or `digest approve`."
        ) from None
    return record(waiting, form)


def _resume_self(
    client: SyncPrefectClient, waiting: approval.Waiting, decision: approval.Decision
) -> None:
    run = client.read_flow_run(UUID(waiting.flow_run_id))
    if run.state is not None and run.state.is_paused():
        client.resume_flow_run(UUID(waiting.flow_run_id), run_input=_form_input(decision))


def _form_input(decision: approval.Decision) -> dict[str, str]:
    return {
        "decision": "approve" if decision.approved else "reject",
        "note": decision.note,
        "by": decision.by,
    }


def await_approval(
    week: IsoWeek, prepared: preparation.PreparedDigest
) -> tuple[preparation.PreparedDigest, approval.Decision] | State[Any]:
    """The frozen, approved content; or the run's end (Cancelled on a no, Failed on silence).

    The answer is for the hash shown; the content is composed again after it, and frozen only
    while it still has that hash, so an edit made meanwhile makes the run wait again. The
    answer this run took counts for its content, whatever answers came after it.
    """
    settings = get_settings()
    taken: approval.Decision | None = None
    while True:
        digest_hash, decision = status(prepared)
        if taken is not None and taken.content_hash == digest_hash:
            decision = taken
        if decision is None:
            if prepared.digest_id is None:  # shown only if it renders and fits, as freezing asks
                preparation.must_render(
                    preparation.Edition.from_settings(settings), prepared.content, week
                )
            taken = _wait(prepared, digest_hash)
            if taken is None:
                return _not_answered(week, settings.approval_timeout_minutes)
            if taken.content_hash != digest_hash:  # answered about the content as it is now
                prepared = compose(week, freeze=False)
                continue
            decision = taken
        publish(prepared, digest_hash, decision)
        if not decision.approved:
            return _rejected(week, decision)
        fresh = compose(week, freeze=False)
        if approval.hash_of(ensure_schema(settings.database_url), fresh) != digest_hash:
            prepared = fresh  # changed since the answer, which does not cover it: wait again
            continue
        frozen = compose(week, freeze=True)
        if status(frozen)[0] == digest_hash:
            return frozen, decision
        prepared = frozen  # changed in the instant before freezing: ask about what froze


def _not_answered(week: IsoWeek, minutes: int) -> State[Any]:
    silence = NotApprovedError(
        f"{week} not approved: nobody answered within {minutes} minutes, so nothing was sent. "
        f"Approve it with `digest approve --week {week}`, then run the week again."
    )
    return Failed(message=str(silence), data=silence)


def _rejected(week: IsoWeek, decision: approval.Decision) -> State[Any]:
    refusal = ApprovalRejectedError(
        f"{week} rejected, so nothing was sent. {decision.sentence()}. Change it with "
        f"`digest edit --week {week}` and run again, or approve it with "
        f"`digest approve --week {week}`."
    )
    return Cancelled(message=str(refusal), data=refusal)


def resume_waiting(waiting: approval.Waiting, decision: approval.Decision) -> approval.Handover:
    """Resume the run whose wait `decision` ended, through the Prefect API, and say what became
    of the answer: resumed here, taken by the run itself (it looked first), or a run that had
    stopped waiting. The answer is in the database either way."""
    from prefect.client.schemas.responses import SetStateStatus

    flow_run_id = UUID(waiting.flow_run_id)
    try:
        with get_client(sync_client=True) as client:
            result = client.resume_flow_run(flow_run_id, run_input=_form_input(decision))
            if result.status == SetStateStatus.ACCEPT:
                return approval.Handover.RESUMED
            return _after_the_pause(client.read_flow_run_states(flow_run_id))
    except ObjectNotFound:
        return approval.Handover.GONE
    except Exception:  # httpx errors: the API is down or elsewhere
        return approval.Handover.UNREACHABLE


def _after_the_pause(states: list[State[Any]]) -> approval.Handover:
    """A run that ran again after its last pause took the answer; one that never did is gone."""
    paused = [i for i, state in enumerate(states) if state.is_paused()]
    after = states[paused[-1] + 1 :] if paused else []
    if not after:
        return approval.Handover.RECORDED  # still paused: it takes the answer at its next look
    if any(state.is_running() for state in after):
        return approval.Handover.TAKEN
    return approval.Handover.GONE
