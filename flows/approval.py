"""Approval in the Prefect UI (DIGEST_APPROVAL=required): the pause, its form, and the resume.

Before anything is sent the run publishes the week's preview as an artifact, records that it
waits, and pauses with `ApprovalForm`, which the UI shows on the paused run. `digest approve`
resumes it through the API with the same form's input. What is approved (a hash), what is
recorded and what an answer means live in digest/run/approval.py; this module only pauses,
resumes and hands over.
"""

# No `from __future__ import annotations`: Prefect builds the form from these annotations.

import time
from collections.abc import Callable
from typing import Any, Literal
from uuid import UUID, uuid4

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout, ObjectNotFound
from prefect.flow_runs import resume_flow_run
from prefect.input import RunInput, keyset_from_paused_state
from prefect.runtime import flow_run
from prefect.states import Cancelled, Failed, Paused
from prefect.utilities.engine import propose_state_sync
from pydantic import Field

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
    """Approve or reject this week's digest (the artifact `approval-<week>` shows it)."""

    decision: Literal["approve", "reject"] = Field(
        default="approve",
        description="approve: send it now. reject: send nothing and end the run Cancelled.",
    )
    note: str = Field(default="", max_length=NOTE_LIMIT, description="A note kept with it.")
    by: str = Field(default="", max_length=NAME_LIMIT, description="Your name, recorded with it.")


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
def record(digest_hash: str, week: str, answer: ApprovalForm) -> approval.Decision:
    decision = approval.Decision(
        week=week,
        content_hash=digest_hash,
        approved=answer.decision == "approve",
        note=_one_clean_line(answer.note),
        by=_one_clean_line(answer.by) or UI_APPROVER,
        at=utcnow(),
    )
    engine = ensure_schema(get_settings().database_url)
    return approval.record_decision(engine, decision, flow_run_id=str(flow_run.id))


def _one_clean_line(text: str) -> str:
    """The UI form's text, which no command line checked: controls and bidi marks dropped."""
    return " ".join(clean_text(text)[0].split())


def _wait(prepared: preparation.PreparedDigest, digest_hash: str) -> approval.Decision | None:
    """Publish, say that this run waits, pause; the answer, or None when time ran out."""
    settings = get_settings()
    engine = ensure_schema(settings.database_url)
    publish(prepared, digest_hash, None)
    approval.record_waiting(
        engine,
        week=prepared.week,
        content_hash=digest_hash,
        flow_run_id=str(flow_run.id),
        at=utcnow(),
    )
    get_run_logger().info(
        "%s waits for approval (content %s): answer on this run, or `digest approve --week %s`",
        prepared.week,
        digest_hash[:12],
        prepared.week,
    )

    def recorded() -> approval.Decision | None:
        return approval.answer_to_run(engine, flow_run_id=str(flow_run.id))

    answer = _pause_for_answer(settings.approval_timeout_minutes * 60, recorded)
    if isinstance(answer, ApprovalForm):
        # `digest approve` records its answer (for the content as it is now) before resuming
        # us; only an answer typed in the UI form is about the content this run published.
        return recorded() or record(digest_hash, prepared.week, answer)
    return answer


def _pause_for_answer(
    timeout_seconds: int, recorded: Callable[[], approval.Decision | None]
) -> ApprovalForm | approval.Decision | None:
    """Prefect's blocking pause with input (as `pause_flow_run` does it), ending at our deadline.

    `pause_flow_run` gives the server and its own wait one timeout, and the server's expiry
    wins the race with a message of its own; here the server keeps the pause a little longer
    than we wait, so the run ends with our sentence, saying why nothing was sent. An answer
    `digest approve` recorded in the database (it could not reach this API) ends the wait too.
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
        while time.monotonic() < deadline:
            time.sleep(max(0.0, min(_POLL_SECONDS, deadline - time.monotonic())))
            run = client.read_flow_run(context.flow_run.id)
            if run.state is not None and run.state.is_running():
                answer: ApprovalForm = ApprovalForm.load(keyset)  # type: ignore[assignment]
                return answer
            found = recorded()
            if found is not None:
                client.resume_flow_run(context.flow_run.id, run_input=_form_input(found))
                return found
    return None


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
    while it still has that hash, so an edit made meanwhile makes the run wait again.
    """
    settings = get_settings()
    minutes = settings.approval_timeout_minutes
    while True:
        digest_hash, decision = status(prepared)
        if decision is None:
            if prepared.digest_id is None:  # shown only if it renders and fits, as freezing asks
                preparation.must_render(
                    preparation.Edition.from_settings(settings), prepared.content, week
                )
            decision = _wait(prepared, digest_hash)
            if decision is None:
                silence = NotApprovedError(
                    f"{week} not approved: nobody answered within {minutes} minutes, so nothing "
                    f"was sent. Approve it with `digest approve --week {week}`, then run the "
                    "week again."
                )
                return Failed(message=str(silence), data=silence)
            if decision.content_hash != digest_hash:  # answered about the content as it is now
                prepared = compose(week, freeze=False)
                continue
        publish(prepared, digest_hash, decision)
        if not decision.approved:
            refusal = ApprovalRejectedError(
                f"{week} rejected, so nothing was sent. {decision.sentence()}. Change it with "
                f"`digest edit --week {week}` and run again, or approve it with "
                f"`digest approve --week {week}`."
            )
            return Cancelled(message=str(refusal), data=refusal)
        fresh = compose(week, freeze=False)
        if approval.hash_of(ensure_schema(settings.database_url), fresh) != digest_hash:
            prepared = fresh  # changed since the answer, which does not cover it: wait again
            continue
        frozen = compose(week, freeze=True)
        if status(frozen)[0] == digest_hash:
            return frozen, decision
        prepared = frozen  # changed in the instant before freezing: ask about what froze


def resume_waiting(flow_run_id: str, *, approved: bool, note: str, by: str) -> bool:
    """Give the waiting run its answer through the Prefect API; False if it no longer waits."""
    from prefect.exceptions import NotPausedError

    answer = {"decision": "approve" if approved else "reject", "note": note, "by": by}
    try:
        resume_flow_run(UUID(flow_run_id), run_input=answer)
    except (NotPausedError, ObjectNotFound, FlowPauseTimeout):
        return False
    except Exception as unreachable:  # httpx errors: the API is down or elsewhere
        raise ApprovalError(
            f"A run waits for this week's approval (flow run {flow_run_id}), but the Prefect "
            f"API did not take the answer ({type(unreachable).__name__}). Set PREFECT_API_URL "
            "to the server that runs it (the UI's address followed by /api), then try again."
        ) from None
    return True
