"""The `digest` console script: the library's commands plus those that run the Prefect flow.

`run`, `serve` and `demo` live here, beside the flow, so that `digest/` never imports Prefect;
Prefect is imported only inside them, so every other command starts without it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Annotated

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


@app.command("run")
def run(
    week: WeekOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Render and report; send nothing.")
    ] = False,
    resend_uncertain: Annotated[
        bool,
        typer.Option(
            "--resend-uncertain", help="Also resend deliveries left uncertain by a crash."
        ),
    ] = False,
    retry_failed: Annotated[
        bool,
        typer.Option(
            "--retry-failed",
            help="Put deliveries the provider refused back to pending first (after a fix).",
        ),
    ] = False,
    refreeze: Annotated[
        bool,
        typer.Option(
            "--refreeze",
            help="Compose a week that never sent anything again, from the catalog as it is now.",
        ),
    ] = False,
    after_recall: Annotated[
        bool,
        typer.Option("--after-recall", help="Send a week recalled with `digest recall`."),
    ] = False,
) -> None:
    """Run the weekly Prefect flow once, in this process."""
    from digest.db import shown_url
    from digest.run.outcome import RunSummary
    from digest.weeks import IsoWeek

    if week:
        IsoWeek.parse(week)  # a bad week fails here, before Prefect starts
    _prefect_defaults()
    settings = load_settings()
    engine(settings)
    # Said first, so a run that fails still tells which database it worked on.
    typer.echo(f"Database: {shown_url(settings.database_url)}", err=True)
    from flows.weekly_digest import weekly_digest

    summary = weekly_digest(
        week=week,
        dry_run=dry_run,
        resend_uncertain=resend_uncertain,
        retry_failed=retry_failed,
        refreeze=refreeze,
        after_recall=after_recall,
    )
    assert isinstance(summary, RunSummary)
    print_summary(summary)


@app.command("demo")
def demo() -> None:
    """Seed the sample catalog and subscribers for the current week and run the flow."""
    _prefect_defaults()
    from flows.demo import run_demo

    run_demo(load_settings(), echo=typer.echo)


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
