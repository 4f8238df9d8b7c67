"""`digest serve`: the weekly deployment, and the daily engagement report's, served from this
process, no work pool needed.

Each run goes in a child process that stops when this one dies (flows/lifeline.py), beats every
30 s, and is marked Crashed by the automation set up here when it stops beating
(flows/crash_detection.py).
"""

from __future__ import annotations

import logging
import os
import signal
from types import FrameType

from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron

from digest.config import Settings
from digest.errors import ConfigError
from flows.crash_detection import ensure_zombie_automation, heartbeat_environment
from flows.engagement_report import DEPLOYMENT_NAME as REPORT_DEPLOYMENT
from flows.engagement_report import engagement_deployment, engagement_report
from flows.weekly_digest import weekly_digest

log = logging.getLogger(__name__)

DEPLOYMENT_NAME = "weekly"
# Monday 08:00 in the schedule's zone: the week that just ended is complete by then.
WEEKLY_CRON = "0 8 * * 1"
# The deployments `digest serve` serves, as `flow/deployment`.
SERVED_DEPLOYMENTS = (
    f"{weekly_digest.name}/{DEPLOYMENT_NAME}",
    f"{engagement_report.name}/{REPORT_DEPLOYMENT}",
)


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # A service manager stops us with SIGTERM: leave as on Ctrl-C, at once, so no later run
    # starts with settings the operator has just changed.
    raise KeyboardInterrupt


def _refuse_work_pool_deployment(name: str) -> None:
    """Serving would take a work pool's deployment of the same name over, and pause it on exit."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            existing = client.read_deployment_by_name(name)
        except ObjectNotFound:
            return
    if existing.work_pool_name:
        raise ConfigError(
            f"The deployment {name} belongs to the work pool "
            f"{existing.work_pool_name!r}; `digest serve` would take it over and pause its "
            "schedule when it stops. Keep the worker (`prefect worker start --pool "
            f"{existing.work_pool_name}`), or, to serve from this machine instead, stop the "
            f"worker, run `prefect deployment delete {name}`, "
            "then `digest serve` again."
        )


def _detect_crashes() -> None:
    """Runs started here beat every 30 s (the child inherits the variable), and the server marks
    them Crashed when they stop."""
    from prefect.client.orchestration import get_client

    os.environ.update(heartbeat_environment())
    with get_client(sync_client=True) as client:
        ensure_zombie_automation(client)


def serve_weekly(settings: Settings) -> None:
    for name in SERVED_DEPLOYMENTS:
        _refuse_work_pool_deployment(name)
    _detect_crashes()
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    weekly = weekly_digest.to_deployment(
        name=DEPLOYMENT_NAME,
        schedules=[Cron(WEEKLY_CRON, timezone=settings.schedule_timezone)],
        concurrency_limit=1,
        description="Send the week's digest to every subscriber exactly once.",
        tags=["verdict-digest"],
    )
    assert isinstance(weekly, RunnerDeployment)  # called outside an event loop: no coroutine
    try:
        serve(weekly, engagement_deployment(settings))
    finally:
        _pause_served()


def _pause_served() -> None:
    """Pause both deployments, as Prefect's runner does when it stops. A stop that lands in the
    moment between registering them and the runner's start (its SIGTERM handler not yet in
    place) would otherwise leave them scheduled with nobody serving them."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            for name in SERVED_DEPLOYMENTS:
                try:
                    deployment = client.read_deployment_by_name(name)
                except ObjectNotFound:  # stopped before it was registered
                    continue
                if not deployment.paused and not deployment.work_pool_name:
                    client.pause_deployment(deployment.id)
    except Exception as unreachable:  # leaving is what matters now; say what is left to do
        log.warning(
            "Could not check that the served deployments are paused (%s): pause them in the "
            "Prefect UI if `digest serve` is not started again.",
            type(unreachable).__name__,
        )
