"""The engagement report as a daily Prefect flow: orchestration only, the numbers, page and
plots come from `digest.engagement`.

Opens and clicks keep arriving for days after a send, so every day the flow publishes the report
of the latest sent weeks again, as a markdown artifact `engagement-<week>` (each day's a new
version of the same key). Run it once with `python flows/engagement_report.py [WEEK]`; `digest
serve` serves it on its daily schedule; deployments/prefect.yaml declares it for a work pool.
"""

# No `from __future__ import annotations` here: Prefect validates parameters from these
# annotations when it loads the flow from its entrypoint, and strings would not resolve there.

import sys
from datetime import datetime
from typing import Annotated, Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.deployments.runner import RunnerDeployment
from prefect.runtime import flow_run
from prefect.schedules import Cron
from pydantic import Field

from digest.config import Settings, get_settings
from digest.db import ensure_schema
from digest.engagement.markdown import render_markdown
from digest.engagement.page import chart_uris
from digest.engagement.report import Sources, build_report, latest_sent_weeks
from digest.weeks import IsoWeek, last_complete_week, utcnow

DEPLOYMENT_NAME = "engagement-report"
# Every day at 07:00 in the schedule's zone (DIGEST_SCHEDULE_TIMEZONE), as `digest serve` serves it.
DAILY_CRON = "0 7 * * *"
# The weeks each run reports: last week's email, and the one before, still gathering clicks.
RECENT_WEEKS = 2

# Results stay in memory: nothing here needs result storage.
_TASK_DEFAULTS: dict[str, Any] = {"persist_result": False, "cache_policy": NO_CACHE}


@task(name="find-sent-weeks", **_TASK_DEFAULTS)
def sent_weeks(up_to: IsoWeek) -> list[str]:
    """The latest weeks whose digest was sent, at or before `up_to`, newest first."""
    settings = get_settings()
    with ensure_schema(settings.database_url).connect() as connection:
        return latest_sent_weeks(connection, up_to=str(up_to), count=RECENT_WEEKS)


@task(name="publish-report", **_TASK_DEFAULTS)
def publish_report(week: str) -> str | None:
    """Build the week's report and publish it as the artifact `engagement-<week>`."""
    settings = get_settings()
    sources = Sources.from_settings(settings)
    with ensure_schema(settings.database_url).connect() as connection:
        report = build_report(connection, week=IsoWeek.parse(week), sources=sources, now=utcnow())
    if report is None:
        get_run_logger().info("no digest was sent for %s: nothing to report", week)
        return None
    markdown = render_markdown(report, charts=chart_uris(report))
    create_markdown_artifact(
        key=f"engagement-{week.lower()}",
        markdown=markdown,
        description=f"verdict-digest engagement report for {week}",
    )
    return markdown


WeekParameter = Annotated[
    str | None,
    Field(
        description="ISO week to report, such as 2026-W47. Empty: the latest sent weeks before "
        "the run's scheduled start.",
        pattern=r"^\d{4}-W\d{2}$",
    ),
]


@flow(name="engagement-report", validate_parameters=True, log_prints=False)
def engagement_report(week: WeekParameter = None) -> list[str]:
    """Publish the engagement report of a week, or of the latest sent weeks, as artifacts.

    Args:
        week: ISO week to report, such as 2026-W47. Leave empty for the two latest weeks whose
            digest was sent before the run's scheduled start (what the daily schedule does).
    """
    settings = get_settings()
    if week:
        weeks = [str(IsoWeek.parse(week))]
    else:
        start: datetime | None = flow_run.scheduled_start_time
        weeks = sent_weeks(last_complete_week(start or utcnow(), settings.zone))
    return [week for week in weeks if publish_report(week) is not None]


def engagement_deployment(settings: Settings) -> RunnerDeployment:
    """The daily deployment `digest serve` serves beside the weekly one."""
    deployment = engagement_report.to_deployment(
        name=DEPLOYMENT_NAME,
        schedules=[Cron(DAILY_CRON, timezone=settings.schedule_timezone)],
        concurrency_limit=1,
        description="Publish the latest sent weeks' engagement reports, every day.",
        tags=["verdict-digest"],
    )
    assert isinstance(deployment, RunnerDeployment)  # called outside an event loop: no coroutine
    return deployment


if __name__ == "__main__":
    engagement_report(week=sys.argv[1] if len(sys.argv) > 1 else None)
