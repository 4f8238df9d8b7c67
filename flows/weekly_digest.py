"""The weekly digest as a Prefect flow: orchestration only, every step a thin call into `digest`.

Run it once in this process with `python flows/weekly_digest.py [WEEK]` or `digest run`; serve it
on its weekly schedule with `digest serve`; deploy it with deployments/prefect.yaml.

Each task builds what it needs (engine, backend, links) from the settings where it runs, so no
secret ever travels as a task or flow parameter, and closes what it opened. A step that refuses
raises its `DigestError`: the task is Failed in the UI with the sentence, the flow run ends
Failed with it, and no traceback is logged for it (flows/refusals.py).
"""

# No `from __future__ import annotations` here: Prefect validates parameters from these
# annotations when it loads the flow from its entrypoint, and strings would not resolve there.

import sys
import threading
import time
from datetime import datetime, timedelta
from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.runtime import flow_run
from prefect.states import Failed
from pydantic import Field
from sqlalchemy.engine import Engine

from digest.catalog import sync as catalog_sync
from digest.catalog.feed import FeedClient, locate
from digest.config import Settings, get_settings
from digest.db import ensure_schema
from digest.delivery import sending
from digest.delivery.cancelling import canceller_for
from digest.delivery.ledger import new_owner
from digest.errors import DigestError, StaleCatalogError
from digest.run import bookkeeping, compliance, preflight, preparation
from digest.run.outcome import RunSummary, compliance_error, run_error
from digest.run.report import render_markdown
from digest.send import get_backend
from digest.weeks import IsoWeek, last_complete_week, resolve_week, utcnow
from flows import feed_wait, lifeline
from flows.approval import await_approval
from flows.crash_detection import ensure_zombie_automation
from flows.refusals import quiet_refusals

WEEK_PATTERN = r"^\d{4}-W\d{2}$"

# Task results stay in memory only: some hold rendered bodies, none may reach result storage.
# No task retries: transient provider errors are retried inside the backend, the one retry layer
# (and transient feed errors inside digest/catalog/feed.py).
_TASK_DEFAULTS: dict[str, Any] = {"persist_result": False, "cache_policy": NO_CACHE}


def _engine(settings: Settings) -> Engine:
    return ensure_schema(settings.database_url)


@task(name="sync-catalog", **_TASK_DEFAULTS)
def sync_catalog(week: IsoWeek) -> catalog_sync.SyncReport:
    """Fetch the site's feed and import it, all or nothing; refused if not complete for `week`."""
    settings = get_settings()
    assert settings.catalog_url is not None
    report = catalog_sync.sync_catalog(
        engine=_engine(settings),
        client=FeedClient.from_settings(settings),
        location=locate(settings.catalog_url),
        week=week,
        zone=settings.zone,
    )
    get_run_logger().info(
        "catalog from %s (generated: %s): %s", report.source, report.generated(), report.changes()
    )
    return report


def _sync_waiting(settings: Settings, week: IsoWeek) -> catalog_sync.SyncReport:
    """sync-catalog, asked again DIGEST_CATALOG_WAIT_MINUTES apart while the feed is not yet
    complete for the week (a schedule, not a network failure: those are retried in feed.py).

    A deployment run reschedules itself for each wait, freeing its worker (flows/feed_wait.py);
    `digest run`, which nothing would start again, waits in its process.
    """
    tries = settings.catalog_wait_tries + 1
    deployed = _deployment_run()
    attempt = feed_wait.waits_so_far() + 1 if deployed else 1
    while True:
        try:
            return sync_catalog(week)
        except StaleCatalogError as stale:
            if attempt >= tries:
                waited = f" (Asked {tries} times, {settings.catalog_wait_minutes:g} minutes apart.)"
                raise StaleCatalogError(f"{stale}{waited if tries > 1 else ''}") from None
            attempt += 1
            next_try = utcnow() + timedelta(minutes=settings.catalog_wait_minutes)
            how = "cancel this flow run" if deployed else "press Ctrl-C"
            said = (
                f"{stale} Asking again in {settings.catalog_wait_minutes:g} minutes, at "
                f"{next_try:%H:%M} UTC (try {attempt} of {tries}, DIGEST_CATALOG_WAIT_MINUTES "
                f"and _TRIES); {how} to stop waiting."
            )
            get_run_logger().warning("%s", said)
            if deployed:
                feed_wait.reschedule(said, at=next_try)
            time.sleep(settings.catalog_wait_minutes * 60)


@task(name="select-and-pair", **_TASK_DEFAULTS)
def select_and_pair(week: IsoWeek, freeze: bool) -> preparation.PreparedDigest:
    settings = get_settings()
    edition = preparation.Edition.from_settings(settings)
    return preparation.prepare_digest(_engine(settings), edition, week, freeze=freeze)


@task(name="check-recall", **_TASK_DEFAULTS)
def check_recall(week: IsoWeek, after_recall: bool) -> None:
    """Refused when the editor recalled the week. Checked before anything is composed, so a
    released week is not frozen again and still takes edits."""
    bookkeeping.refuse_if_recalled(
        _engine(get_settings()), week=str(week), after_recall=after_recall
    )


@task(name="drop-frozen", **_TASK_DEFAULTS)
def drop_frozen(week: IsoWeek) -> bool:
    return preparation.refreeze(_engine(get_settings()), week)


@task(name="count-recipients", **_TASK_DEFAULTS)
def count_recipients(prepared: preparation.PreparedDigest) -> dict[str, int]:
    settings = get_settings()
    return preparation.dry_run_recipients(_engine(settings), prepared.content)


@task(name="check-complete", **_TASK_DEFAULTS)
def check_complete(digest_id: int | None) -> bool:
    assert digest_id is not None
    return bookkeeping.week_is_complete(_engine(get_settings()), digest_id=digest_id)


@task(name="begin-run", **_TASK_DEFAULTS)
def begin_run(
    digest_id: int | None,
    owner: str,
    resend_uncertain: bool,
    retry_failed: bool,
    after_recall: bool = False,
) -> dict[str, int]:
    """The run's start counts; refused while another run sends the week, or for a recalled week.

    Batches a dead run left in flight are cancelled here while that is still possible, then
    sent again.
    """
    assert digest_id is not None
    settings = get_settings()
    engine = _engine(settings)
    with get_backend(settings) as backend:
        return bookkeeping.begin_run(
            engine,
            digest_id=digest_id,
            owner=owner,
            lease_seconds=settings.lease_seconds,
            resend_uncertain=resend_uncertain,
            retry_failed=retry_failed,
            canceller=canceller_for(settings, engine=engine, backend=backend),
            after_recall=after_recall,
        )


@task(name="plan-recipients", **_TASK_DEFAULTS)
def plan_recipients(prepared: preparation.PreparedDigest) -> dict[str, int]:
    settings = get_settings()
    edition = preparation.Edition.from_settings(settings)
    summary = preparation.plan(_engine(settings), edition, prepared)
    return {"planned": summary.planned, "skipped": summary.skipped, "variants": summary.variants}


@task(name="send", **_TASK_DEFAULTS)
def send(digest_id: int, week: str, owner: str, stop: sending.RunStop) -> sending.SendReport:
    """Every pending row, once: several requests in flight, each answer recorded as it comes."""
    settings = get_settings()
    logger = get_run_logger()
    progress = SendProgress(logger)
    with get_backend(settings) as backend:
        sender = sending.Sender.from_settings(settings, engine=_engine(settings), backend=backend)
        plan = sending.send_plan(sender.engine, digest_id=digest_id, week=week, owner=owner)
        report = sending.send(
            sender, plan, stop=stop, on_request=progress.request, on_wait=logger.warning
        )
    progress.finish(report)
    return report


class SendProgress:
    """The send's log: a line for every request that did more than send (a lost answer, a
    refusal, rows put back), and a running count every few seconds."""

    EVERY_SECONDS = 5.0

    def __init__(self, logger: Any) -> None:
        self._logger = logger
        self._sent = 0
        self._requests = 0
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def request(self, outcome: sending.RequestReport) -> None:
        with self._lock:
            self._sent += outcome.sent
            self._requests += 1
            due = time.monotonic() - self._last >= self.EVERY_SECONDS
            if due:
                self._last = time.monotonic()
            sent, requests = self._sent, self._requests
        if outcome.error or outcome.failed or outcome.uncertain or outcome.released:
            self._logger.info("%s", describe_request(outcome))
        elif due:
            self._logger.info("sent %s so far in %s request(s)", sent, requests)

    def finish(self, report: sending.SendReport) -> None:
        self._logger.info(
            "send done: %s sent in %s request(s) under %s provider batch(es); %s lost answer(s)%s",
            self._sent,
            len(report.requests),
            len(report.batch_ids),
            report.lost_answers,
            f"; stopped: {report.stop}" if report.stop else "",
        )


def describe_request(outcome: sending.RequestReport) -> str:
    """One request in a line: what it claimed and where its rows went, and why."""
    line = (
        f"request of variant {outcome.variant_id}: claimed {outcome.claimed}, sent "
        f"{outcome.sent}, failed {outcome.failed}, uncertain {outcome.uncertain}, back to "
        f"pending {outcome.released}"
    )
    if outcome.lost:
        line += (
            f"; answer lost, its batch cancelled, {outcome.cancelled} row(s) of the batch sent "
            "again"
            if outcome.cancelled
            else "; answer lost"
        )
    return line + (f" ({outcome.error})" if outcome.error else "")


@task(name="end-run", **_TASK_DEFAULTS)
def end_run(digest_id: int, owner: str) -> None:
    bookkeeping.end_run(_engine(get_settings()), digest_id=digest_id, owner=owner)


@task(name="reconcile", **_TASK_DEFAULTS)
def reconcile(summary: RunSummary, owner: str | None) -> RunSummary:
    """The ledger's account of the digest, written into the summary."""
    settings = get_settings()
    engine = _engine(settings)
    assert summary.digest_id is not None
    summary.counts, summary.reasons = bookkeeping.reconcile(engine, digest_id=summary.digest_id)
    if owner is not None:
        summary.sent_this_run, summary.batches = bookkeeping.sent_by_run(
            engine, digest_id=summary.digest_id, owner=owner
        )
    summary.compliance = compliance.compliance_checks(
        engine, digest_id=summary.digest_id, postal_address=settings.postal_address
    )
    if owner is not None:
        compliance.add_header_check(
            summary.compliance,
            sent=summary.sent_this_run,
            with_headers=summary.with_unsubscribe_headers,
        )
    return summary


@task(name="check-compliance", **_TASK_DEFAULTS)
def check_compliance(summary: RunSummary) -> None:
    """Every stored variant carries the unsubscribe link and postal address, under Gmail's clip:
    refused here, before the send, so nobody gets a digest without them."""
    settings = get_settings()
    assert summary.digest_id is not None
    checks = compliance.compliance_checks(
        _engine(settings), digest_id=summary.digest_id, postal_address=settings.postal_address
    )
    problems = compliance.failures(checks)
    if problems:
        raise compliance_error(summary.week, problems, sent=0)


@task(name="report", **_TASK_DEFAULTS)
def report(summary: RunSummary) -> str:
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


def _send(
    summary: RunSummary, prepared: preparation.PreparedDigest, owner: str
) -> RunSummary | State[Any]:
    """Plan the recipients and send; the send's stop, if any, decides the end."""
    logger = get_run_logger()
    assert summary.digest_id is not None
    stop = sending.RunStop()
    try:
        clock = time.perf_counter()
        planned = plan_recipients(prepared)
        summary.plan_seconds = time.perf_counter() - clock
        logger.info(
            "planned %s recipients (%s skipped, %s variants)",
            planned["planned"],
            planned["skipped"],
            planned["variants"],
        )
        check_compliance(summary)
        clock = time.perf_counter()
        # A runner or worker killed under this run, or an interrupt, stops the send.
        with lifeline.stop_with_the_process(lambda why: stop.set(sending.StopKind.STOPPED, why)):
            try:
                sent = send(summary.digest_id, summary.week, owner, stop)
            except Exception:
                # The send itself broke (the database, a bug): rows it had claimed stay `sending`,
                # and the ledger's account below says so and what resolves them.
                logger.exception("the send stopped unexpectedly")
                summary.with_unsubscribe_headers = None
            else:
                summary.with_unsubscribe_headers = sent.with_unsubscribe_headers
                summary.lost_answers = sent.lost_answers
                summary.batch_ids = len(sent.batch_ids)
        summary.send_seconds = time.perf_counter() - clock
    except BaseException:
        # An interrupt (Ctrl-C while planning) can cut a statement short on a pooled connection
        # and leave it unable to commit: the lease is released on fresh connections.
        _engine(get_settings()).dispose()
        raise
    finally:
        end_run(summary.digest_id, owner)
    summary = reconcile(summary, owner)
    report(summary)
    return _finish(summary, run_error(summary, stop))


def _finish(summary: RunSummary, error: DigestError | None) -> RunSummary | State[Any]:
    if error is None:
        return summary
    get_run_logger().error("%s", error)
    return Failed(message=str(error), data=error)


WeekParameter = Annotated[
    str | None,
    Field(
        description="ISO week to send, such as 2026-W47. Empty: the last complete week before "
        "the run's scheduled start time.",
        pattern=WEEK_PATTERN,
    ),
]
DryRunParameter = Annotated[
    bool,
    Field(
        description="Select, pair and render, and report what would be sent; send and record "
        "nothing."
    ),
]
ResendUncertainParameter = Annotated[
    bool,
    Field(
        description="Also resend deliveries left 'uncertain' by a run that died mid-batch "
        "(their recipients may get the digest twice)."
    ),
]
RefreezeParameter = Annotated[
    bool,
    Field(
        description="Compose the week again from the catalog as it is now, dropping its frozen "
        "content; refused once anything was sent."
    ),
]
AfterRecallParameter = Annotated[
    bool,
    Field(
        description="Send a week the editor recalled (`digest recall`): what was stopped, and "
        "what was never sent."
    ),
]
RetryFailedParameter = Annotated[
    bool,
    Field(
        description="Put deliveries the provider refused ('failed') back to pending first, "
        "once their cause is fixed."
    ),
]


@flow(
    name="weekly-digest",
    validate_parameters=True,
    log_prints=False,
)
def weekly_digest(
    week: WeekParameter = None,
    dry_run: DryRunParameter = False,
    resend_uncertain: ResendUncertainParameter = False,
    retry_failed: RetryFailedParameter = False,
    refreeze: RefreezeParameter = False,
    after_recall: AfterRecallParameter = False,
) -> RunSummary | State[Any]:
    """Send one week's digest to every planned subscriber exactly once.

    Args:
        week: ISO week to send, such as 2026-W47. Leave empty for the last complete week before
            the run's scheduled start time (what the weekly schedule does).
        dry_run: Select, pair and render, and report what would be sent; send and record nothing.
        resend_uncertain: Also resend deliveries left 'uncertain' by a run that died mid-batch;
            their recipients may get the digest twice.
        retry_failed: Put deliveries the provider refused ('failed') back to pending first,
            once their cause is fixed.
        refreeze: Compose the week again from the catalog as it is now, dropping its
            frozen content; refused once anything was sent.
        after_recall: Send a week the editor recalled (`digest recall`).
    """
    # Prefect shows the docstring's Args in the UI's run form; the Field descriptions validate.
    quiet_refusals()
    settings = get_settings()
    _when_deployed()
    the_week: IsoWeek | None = None
    try:
        the_week = resolve_week(week, now=utcnow(), zone=settings.zone) if week else None
        the_week = the_week or scheduled_week(settings)
        if not dry_run:
            _check_sending_setup(settings)
        composed = _compose(
            settings, the_week, dry_run=dry_run, refreeze=refreeze, after_recall=after_recall
        )
    except DigestError as refused:
        shown = str(the_week or week or "")
        return _finish(RunSummary(week=shown, digest_id=None, subject=None), refused)
    if isinstance(composed, State):
        return composed
    prepared, summary = composed
    return _send_or_report(
        the_week,
        prepared,
        summary,
        dry_run=dry_run,
        resend_uncertain=resend_uncertain,
        retry_failed=retry_failed,
        after_recall=after_recall,
    )


def _check_sending_setup(settings: Settings) -> None:
    """Refuse now what the send would refuse later (the backend's settings, the signing key):
    found after the freeze, it left a frozen week that edits could only reach with --refreeze."""
    get_backend(settings)
    settings.signing_key()


def _deployment_run() -> bool:
    """Whether a runner or a worker started this run (for a deployment), not `digest run`."""
    context = FlowRunContext.get()
    return (
        context is not None
        and context.flow_run is not None
        and bool(context.flow_run.deployment_id)
    )


def _when_deployed() -> None:
    """A deployment run (started by `digest serve` or a worker) stops when the process that
    started it dies, and is marked Crashed when its heartbeats stop (flows/crash_detection.py:
    set up here too, so a work pool's runs have it without a step of their own)."""
    if not _deployment_run():
        return
    logger = get_run_logger()
    lifeline.watch_parent(logger.warning)
    try:
        with get_client(sync_client=True) as client:
            ensure_zombie_automation(client)
    except Exception as failed:  # the run goes on: crash detection is a help, not a step
        logger.warning(
            "Could not set up crash detection on the Prefect server (%s): a run killed with "
            "its worker would show Running until someone sets it Crashed.",
            type(failed).__name__,
        )


def _send_or_report(
    the_week: IsoWeek,
    prepared: preparation.PreparedDigest,
    summary: RunSummary,
    *,
    dry_run: bool,
    resend_uncertain: bool,
    retry_failed: bool,
    after_recall: bool,
) -> RunSummary | State[Any]:
    """Send what the week still owes, or say why there is nothing to send."""
    if prepared.content.is_empty:
        summary.note = preflight.nothing_new_note(the_week)
    elif dry_run:
        would = count_recipients(prepared)
        summary.counts = {"would_send": would["would_send"], "would_skip": would["would_skip"]}
        summary.note = "Dry run: nothing was sent or recorded."
    elif check_complete(prepared.digest_id) and not (resend_uncertain or retry_failed):
        summary = reconcile(summary, None)
        summary.already_complete = True
        summary.note = bookkeeping.already_sent_note(the_week)
        report(summary)
        return _finish(summary, run_error(summary))
    else:
        return _begin_and_send(
            summary,
            prepared,
            resend_uncertain=resend_uncertain,
            retry_failed=retry_failed,
            after_recall=after_recall,
        )
    get_run_logger().info("%s", summary.note)
    report(summary)
    return summary


def _compose(
    settings: Settings, the_week: IsoWeek, *, dry_run: bool, refreeze: bool, after_recall: bool
) -> tuple[preparation.PreparedDigest, RunSummary] | State[Any]:
    """The week's content and its summary: the feed synced, edits applied, and, with approval
    required, approved before it freezes (a No or silence ends the run here)."""
    synced = _sync_waiting(settings, the_week) if settings.catalog_url else None
    if not dry_run:
        check_recall(the_week, after_recall)
    if refreeze and not dry_run:
        drop_frozen(the_week)
    approving = settings.approval == "required" and not dry_run
    prepared = select_and_pair(the_week, freeze=not dry_run and not approving)
    approved_by = ""
    if approving and not prepared.content.is_empty:
        approved = await_approval(the_week, prepared)
        if isinstance(approved, State):
            return approved
        prepared, approved_by = approved[0], approved[1].sentence()
    summary = RunSummary.of_content(
        str(the_week), prepared.digest_id, prepared.content, dry_run=dry_run
    )
    summary.catalog = synced
    summary.approval = approved_by
    return prepared, summary


def _begin_and_send(
    summary: RunSummary,
    prepared: preparation.PreparedDigest,
    *,
    resend_uncertain: bool,
    retry_failed: bool,
    after_recall: bool,
) -> RunSummary | State[Any]:
    owner = new_owner()
    try:
        started = begin_run(prepared.digest_id, owner, resend_uncertain, retry_failed, after_recall)
    except DigestError as refused:  # another run sends the week, or it was recalled
        return _finish(summary, refused)
    get_run_logger().info(
        "%s rows left in flight by a dead run cancelled and sent again; %s found uncertain; "
        "%s settled by provider events; %s uncertain and %s failed requeued on purpose",
        started["cancelled_and_resent"],
        started["found_uncertain"],
        started["settled_by_events"],
        started["requeued_uncertain"],
        started["requeued_failed"],
    )
    settings = get_settings()
    with bookkeeping.lease_heartbeat(
        _engine(settings),
        digest_id=started_digest(prepared),
        owner=owner,
        lease_seconds=settings.lease_seconds,
    ):
        return _send(summary, prepared, owner)


def started_digest(prepared: preparation.PreparedDigest) -> int:
    assert prepared.digest_id is not None
    return prepared.digest_id


if __name__ == "__main__":
    weekly_digest(week=sys.argv[1] if len(sys.argv) > 1 else None)
