"""`digest serve`: the weekly deployment served from this process, no work pool needed."""

from __future__ import annotations

import signal
from types import FrameType

from prefect.schedules import Cron

from digest.config import Settings
from flows.weekly_digest import weekly_digest

DEPLOYMENT_NAME = "weekly"
# Monday 08:00 in the schedule's zone: the week that just ended is complete by then.
WEEKLY_CRON = "0 8 * * 1"


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # A service manager stops us with SIGTERM: leave as on Ctrl-C, at once, so no later run
    # starts with settings the operator has just changed.
    raise KeyboardInterrupt


def serve_weekly(settings: Settings) -> None:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    weekly_digest.serve(
        name=DEPLOYMENT_NAME,
        schedules=[Cron(WEEKLY_CRON, timezone=settings.schedule_timezone)],
        global_limit=1,
        description="Send the week's digest to every subscriber exactly once.",
        tags=["verdict-digest"],
    )
