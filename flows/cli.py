"""The `digest` console script: the library's commands plus those that run the Prefect flow.

`run`, `serve`, `approve` and `demo` live here, beside the flow, so that `digest/` never imports
Prefect; Prefect is imported only inside them, and only once they need it (a run with work to
do, a run that waits for an approval), so every other command starts without it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated, Any

import typer

from digest.cli import app
from digest.cli.app import WeekOption, engine, load_settings, main_with

if TYPE_CHECKING:
    from digest.run.outcome import RunSummary


def _prefect_defaults() -> None:
    """What Prefect must see before it is imported: no analytics, room for a slow first start."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def print_summary(summary: RunSummary) -> None:
    typer.echo(f"Week {summary.week}: {summary.note or summary.subject or ''}".rstrip())
    if summary.catalog is not None:
        synced = summary.catalog
        typer.echo(
            f"  catalog: {synced.source} (generated: {synced.generated()}): {synced.changes()}"
        )
    if summary.approval:
        typer.echo(f"  {summary.approval}")
    for a, b, category in summary.pairs:
        typer.echo(f"  pair  {a} vs {b}  ({category})")
    if summary.also_new:
        typer.echo("  also new: " + ", ".join(summary.also_new))
    for slug, reason in summary.excluded:
        typer.echo(f"  excluded {slug}: {reason}")
    if summary.counts:
        counts = ", ".join(f"{state} {n}" for state, n in sorted(summary.counts.items()))
        typer.echo(f"  deliveries: {counts}; sent by this run: {summary.sent_this_run}")
    uncertain = summary.counts.get("uncertain", 0)
    if uncertain:
        typer.echo(
            f"  {uncertain} deliveries are uncertain: a run died while the provider held them, "
            "so their recipients may or may not have the digest. Resend them on purpose with "
            f"`digest run --week {summary.week} --resend-uncertain`."
        )


DryRunFlag = Annotated[bool, typer.Option("--dry-run", help="Render and report; send nothing.")]
ResendUncertainFlag = Annotated[
    bool,
    typer.Option("--resend-uncertain", help="Also resend deliveries left uncertain by a crash."),
]
RetryFailedFlag = Annotated[
    bool,
    typer.Option(
        "--retry-failed",
        help="Put deliveries the provider refused back to pending first (after a fix).",
    ),
]
RefreezeFlag = Annotated[
    bool,
    typer.Option(
        "--refreeze",
        help="Compose a week that never sent anything again, from the catalog as it is now.",
    ),
]
AfterRecallFlag = Annotated[
    bool, typer.Option("--after-recall", help="Send a week recalled with `digest recall`.")
]


@app.command("run")
def run(
    week: WeekOption = None,
    dry_run: DryRunFlag = False,
    resend_uncertain: ResendUncertainFlag = False,
    retry_failed: RetryFailedFlag = False,
    refreeze: RefreezeFlag = False,
    after_recall: AfterRecallFlag = False,
) -> None:
    """Run the weekly Prefect flow once, in this process."""
    from digest.db import shown_url
    from digest.errors import RunInterruptedError
    from digest.run.outcome import RunSummary, run_error
    from digest.run.preflight import Asked, answer_without_a_run
    from digest.run.preparation import Edition
    from digest.weeks import IsoWeek, resolve_week, utcnow

    if week:
        IsoWeek.parse(week)  # a bad week fails here, before Prefect starts
    _prefect_defaults()
    settings = load_settings()
    database = engine(settings)
    # Said first, so a run that fails still tells which database it worked on.
    typer.echo(f"Database: {shown_url(settings.database_url)}", err=True)
    the_week = resolve_week(week, now=utcnow(), zone=settings.zone)
    asked = Asked(
        dry_run=dry_run,
        resend_uncertain=resend_uncertain,
        retry_failed=retry_failed,
        refreeze=refreeze,
        after_recall=after_recall,
        has_feed=settings.catalog_url is not None,
    )
    # Refusals and runs with nothing to do are answered from the database, with no server.
    answered = answer_without_a_run(database, Edition.from_settings(settings), the_week, asked)
    if answered is not None:
        print_summary(answered)
        error = run_error(answered)
        if error is not None:
            raise error
        return
    from flows.temporary_server import prefect_api
    from flows.weekly_digest import weekly_digest

    try:
        with prefect_api(lambda line: typer.echo(line, err=True)):
            summary = weekly_digest(
                week=str(the_week),
                dry_run=dry_run,
                resend_uncertain=resend_uncertain,
                retry_failed=retry_failed,
                refreeze=refreeze,
                after_recall=after_recall,
            )
    except KeyboardInterrupt:
        raise RunInterruptedError(
            f"Interrupted: the run for {the_week} stopped after the request in flight. What it "
            f"sent stays sent; run `digest run --week {the_week}` again to finish it (it sends "
            "whatever is left, nobody twice), and `digest status` shows where it stands."
        ) from None
    assert isinstance(summary, RunSummary)
    print_summary(summary)


@app.command("approve")
def approve(
    week: Annotated[str, typer.Option("--week", help="ISO week such as 2026-W47.")],
    reject: Annotated[
        bool, typer.Option("--reject", help="Reject it: nothing is sent, the run is cancelled.")
    ] = False,
    note: Annotated[str, typer.Option("--note", help="A note kept with the decision.")] = "",
    by: Annotated[
        str | None, typer.Option("--by", help="Who decides (default: the login name).")
    ] = None,
) -> None:
    """Approve (or reject) week W's content as it is now; resumes the run waiting for it."""
    from digest.editorial.edits import checked_note, editor_name
    from digest.run import approval
    from digest.run.preparation import Edition
    from digest.weeks import IsoWeek, utcnow

    the_week = IsoWeek.parse(week)
    who, said = editor_name(by), checked_note(note)
    settings = load_settings()
    database = engine(settings, read_only=True)  # a missing SQLite file is never created
    if settings.approval != "required":
        typer.echo(
            "Note: DIGEST_APPROVAL is not `required` in this shell, so runs that read the same "
            "settings send without waiting for an answer.",
            err=True,
        )
    now = utcnow()
    waiting = approval.waiting_run(
        database, week=str(the_week), now=now, timeout_minutes=settings.approval_timeout_minutes
    )
    if waiting is not None and not waiting.ended and _prefect_api_configured():
        import flows.approval  # noqa: F401 (Prefect loads now, so the resume follows the answer)
    answer = approval.answer_now(
        database,
        Edition.from_settings(settings),
        the_week,
        decision=approval.Decision(str(the_week), "", not reject, said, who, now),
        timeout_minutes=settings.approval_timeout_minutes,
        resume=_resume_through_api,
    )
    typer.echo(answer_sentence(answer))


def _resume_through_api(waiting: Any, decision: Any) -> Any:
    """Resume the run through the Prefect API when one is configured (Prefect is imported only
    here, when a run waits: every other `digest approve` starts in well under a second)."""
    from digest.run.approval import Handover

    if not _prefect_api_configured():
        return Handover.RECORDED
    from flows.approval import resume_waiting

    return resume_waiting(waiting, decision)


def answer_sentence(answer: Any) -> str:
    """What `digest approve` did, in the approver's words: always "<week> approved" (or
    "rejected") first, then what became of the answer."""
    from digest.run.approval import Handover

    decision, waiting, handover = answer.decision, answer.waiting, answer.handover
    verb = "approved" if decision.approved else "rejected"
    content = decision.content_hash[:12]
    head = f"{decision.week} {verb} by {decision.by}"
    if waiting is None or handover is Handover.NO_RUN:
        return (
            f"{head} (content {content}); no run waits, so the next run finds this answer. An "
            "edit or a catalog change before then voids it."
        )
    run = f"flow run {waiting.flow_run_id}"
    if handover is Handover.ANSWERED_BEFORE:
        return (
            f"{head} (content {content}), recorded; but {run} had already taken an answer and "
            f"goes on with it: {answer.taken.sentence()}."
        )
    told = {
        Handover.RESUMED: f"{run} resumes with it",
        Handover.TAKEN: f"{run} found it first and resumed itself with it",
        Handover.RECORDED: f"recorded for {run}, which waits for it and takes it within seconds",
        Handover.UNREACHABLE: (
            f"recorded for {run}; the Prefect API did not answer, so the run takes it at its "
            "next look (every 2 s) if it still runs"
        ),
        Handover.GONE: (
            f"recorded, but {run} stopped waiting without taking it (it ended or crashed), so "
            "the next run finds this answer"
        ),
    }[handover]
    return f"{head}: {told} (content {content}).{_content_changed(answer, verb)}"


def _content_changed(answer: Any, verb: str) -> str:
    if not answer.content_changed:
        return ""
    return (
        f" The content changed since the run published it (content "
        f"{answer.waiting.content_hash[:12]}): this answer covers the content as it is now "
        f"(content {answer.decision.content_hash[:12]}), which the run composes again and finds "
        f"{verb}."
    )


def _prefect_api_configured() -> bool:
    """Whether PREFECT_API_URL (environment, else the Prefect profile) names a server; set but
    empty means none, without reading the profile."""
    named = os.environ.get("PREFECT_API_URL")
    if named is not None:
        return bool(named.strip())
    _prefect_defaults()
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


@app.command("demo")
def demo() -> None:
    """Seed the samples into ./demo.db and run the flow for the last complete week."""
    _prefect_defaults()
    from flows.demo import run_demo

    run_demo(echo=typer.echo)


@app.command("serve")
def serve() -> None:
    """Serve the weekly deployment (cron schedule) for the Prefect UI, on this machine."""
    _prefect_defaults()
    engine(load_settings())
    from flows.serve import serve_weekly

    serve_weekly(load_settings())


def main() -> None:
    """Console entry point."""
    main_with(app)
