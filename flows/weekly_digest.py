"""The weekly digest as a Prefect flow: orchestration only, every step a thin call into `digest`.

Run it once in this process with `python flows/weekly_digest.py [WEEK]` or `digest run`; serve it
on its weekly schedule with `digest serve`; deploy it with deployments/prefect.yaml.
"""

# No `from __future__ import annotations` here: Prefect validates parameters from these
# annotations when it loads the flow from its entrypoint, and strings would not resolve there.

import sys
import time
from datetime import datetime
from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import Task, exponential_backoff
from prefect.utilities.annotations import unmapped
from pydantic import Field

from digest.config import Settings, get_settings
from digest.delivery.ledger import new_owner
from digest.errors import DigestError, RunIncompleteError, RunInProgressError
from digest.run import steps as pipeline
from digest.run.report import render_markdown
from digest.send.base import TransientSendError
from digest.weeks import IsoWeek, last_complete_week, resolve_week, utcnow

WEEK_PATTERN = r"^\d{4}-W\d{2}$"


def _only_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry a send only for errors worth retrying: never a refused key or a refused batch."""
    try:
        state.result()
    except TransientSendError:
        return True
    except Exception:
        return False
    return False


# Task results stay in memory only: some hold rendered bodies, none may reach result storage.
# Tasks read settings themselves, so no secret ever travels as a task or flow parameter.
_TASK_DEFAULTS: dict[str, Any] = {"persist_result": False, "cache_policy": NO_CACHE}


@task(name="select-and-pair", **_TASK_DEFAULTS)
def select_and_pair(week: IsoWeek, freeze: bool) -> pipeline.PreparedDigest:
    return pipeline.prepare_digest(get_settings(), week, freeze=freeze)


@task(name="plan-recipients", **_TASK_DEFAULTS)
def plan_recipients(prepared: pipeline.PreparedDigest) -> dict[str, int]:
    summary = pipeline.plan(get_settings(), prepared)
    return {"planned": summary.planned, "skipped": summary.skipped, "variants": summary.variants}


@task(name="begin-run", **_TASK_DEFAULTS)
def begin_run(digest_id: int, owner: str, resend_uncertain: bool) -> dict[str, int] | str:
    """The run's start counts, or why another run keeps this one from starting."""
    try:
        return pipeline.begin_run(
            get_settings(), digest_id, owner=owner, resend_uncertain=resend_uncertain
        )
    except RunInProgressError as refused:
        return str(refused)


@task(
    name="send-lane",
    task_run_name="send-lane-{lane}",
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=_only_transient,
    **_TASK_DEFAULTS,
)
def send_lane(lane: int, plan: pipeline.SendPlan, week: str, owner: str) -> pipeline.LaneReport:
    """One sender: batch after batch until nothing is pending; a retry picks up what is left."""
    logger = get_run_logger()

    def log_batch(batch: pipeline.BatchReport) -> None:
        logger.info(
            "lane %s, variant %s: claimed %s, sent %s, failed %s%s",
            lane,
            batch.variant_id,
            batch.claimed,
            batch.sent,
            batch.failed,
            f" ({batch.error})" if batch.error else "",
        )

    return pipeline.send_lane(
        get_settings(), plan, lane=lane, week=week, owner=owner, on_batch=log_batch
    )


@task(name="reconcile", **_TASK_DEFAULTS)
def reconcile(digest_id: int) -> tuple[dict[str, int], list[tuple[str, str, int]]]:
    return pipeline.reconcile(get_settings(), digest_id)


@task(name="report", **_TASK_DEFAULTS)
def report(summary: pipeline.RunSummary) -> str:
    markdown = render_markdown(summary)
    create_markdown_artifact(
        key=f"weekly-digest-{summary.week.lower()}",
        markdown=markdown,
        description=f"verdict-digest run report for {summary.week}",
    )
    return markdown


def scheduled_week(settings: Settings) -> IsoWeek:
    """The last complete week before the scheduled start: a late or retried run keeps its week."""
    start: datetime | None = flow_run.scheduled_start_time
    return last_complete_week(start or utcnow(), settings.zone)


@flow(
    name="weekly-digest",
    # Lanes overlap their network waits; four keep two cores busy.
    task_runner=ThreadPoolTaskRunner[PrefectFuture[Any]](  # type: ignore[arg-type]
        max_workers=pipeline.SENDER_LANES
    ),
    validate_parameters=True,
    log_prints=False,
)
def weekly_digest(
    week: Annotated[
        str | None,
        Field(
            description="ISO week to send, such as 2026-W47. Empty: the last complete week "
            "before the run's scheduled start time.",
            pattern=WEEK_PATTERN,
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        Field(
            description="Select, pair and render, and report what would be sent; send and "
            "record nothing."
        ),
    ] = False,
    resend_uncertain: Annotated[
        bool,
        Field(
            description="Also resend deliveries left 'uncertain' by a run that died mid-batch "
            "(their recipients may get the digest twice)."
        ),
    ] = False,
) -> pipeline.RunSummary | State[Any]:
    """Send one week's digest to every planned subscriber exactly once.

    Args:
        week: ISO week to send, such as 2026-W47. Leave empty for the last complete week before
            the run's scheduled start time (what the weekly schedule does).
        dry_run: Select, pair and render, and report what would be sent; send and record nothing.
        resend_uncertain: Also resend deliveries left 'uncertain' by a run that died mid-batch;
            their recipients may get the digest twice.
    """
    logger = get_run_logger()
    settings = get_settings()
    try:
        the_week = (
            resolve_week(week, now=utcnow(), zone=settings.zone)
            if week
            else scheduled_week(settings)
        )
    except DigestError as bad_week:
        return _failed(bad_week)
    prepared = select_and_pair(the_week, freeze=not dry_run)
    content = prepared.content
    summary = pipeline.RunSummary(
        week=str(the_week),
        digest_id=prepared.digest_id,
        subject=content.subject if not content.is_empty else None,
        pairs=[(p.a.slug, p.b.slug, p.category) for p in content.pairs],
        also_new=[t.slug for t in content.also_new],
        excluded=[(e.slug, e.reason) for e in content.excluded],
        new_tools=content.new_tool_count,
        dry_run=dry_run,
    )
    if content.is_empty:
        summary.note = f"No new tools in {the_week}: nothing to send."
        logger.info(summary.note)
        report(summary)
        return summary
    if dry_run:
        would = pipeline.active_recipients_preview(settings, content)
        summary.counts = {"would_send": would["would_send"], "would_skip": would["would_skip"]}
        summary.note = "Dry run: nothing was sent or recorded."
        report(summary)
        return summary

    assert prepared.digest_id is not None
    digest_id = prepared.digest_id
    if pipeline.week_is_complete(settings, digest_id) and not resend_uncertain:
        summary.counts, summary.reasons = reconcile(digest_id)
        summary.already_complete = True
        summary.note = f"{the_week} was already fully sent: nothing to do."
        summary.compliance = pipeline.compliance_checks(settings, digest_id)
        logger.info(summary.note)
        report(summary)
        return summary

    owner = new_owner()
    started = begin_run(digest_id, owner, resend_uncertain)
    if isinstance(started, str):
        return _failed(RunInProgressError(started))
    lane_reports: list[pipeline.LaneReport] = []
    try:
        clock = time.perf_counter()
        planned = plan_recipients(prepared)
        summary.plan_seconds = time.perf_counter() - clock
        logger.info(
            "planned %s recipients (%s skipped, %s variants); %s rows found uncertain; "
            "%s rows settled by provider events",
            planned["planned"],
            planned["skipped"],
            planned["variants"],
            started["found_uncertain"],
            started["settled_by_events"],
        )
        clock = time.perf_counter()
        sender = send_lane.with_options(
            retries=settings.send_task_retries,
            retry_delay_seconds=exponential_backoff(
                backoff_factor=settings.send_retry_delay_seconds
            ),
        )
        plan = pipeline.send_plan(settings, digest_id)
        futures = sender.map(plan.lanes, unmapped(plan), unmapped(str(the_week)), unmapped(owner))
        for future in futures:
            future.wait()
            if future.state.is_completed():
                lane_reports.append(future.result())
        summary.send_seconds = time.perf_counter() - clock
        summary.sent_this_run, summary.batches = pipeline.sent_by_run(
            settings, digest_id, owner=owner
        )
    finally:
        pipeline.end_run(settings, digest_id, owner=owner)
    summary.counts, summary.reasons = reconcile(digest_id)
    summary.compliance = pipeline.compliance_checks(settings, digest_id)
    report(summary)
    stop = next((r.stop for r in lane_reports if r.stop), None)
    if pipeline.auth_rejected():
        return _failed(pipeline.auth_error())
    if stop is not None:
        return _failed(RunInProgressError(stop))
    if summary.unfinished:
        return _failed(RunIncompleteError(pipeline.incomplete_message(summary)))
    return summary


def _failed(error: DigestError) -> State[Any]:
    """End the run Failed with a sentence for people: the caller gets `error` back, no traceback."""
    get_run_logger().error("%s", error)
    return Failed(message=str(error), data=error)


if __name__ == "__main__":
    weekly_digest(week=sys.argv[1] if len(sys.argv) > 1 else None)
