"""Sender lanes for tests: the backend is opened here, handed in, and closed here."""

from __future__ import annotations

from digest.config import Settings
from digest.db import get_engine
from digest.delivery import sending
from digest.send import get_backend
from digest.send.base import EmailBackend


def sender_for(settings: Settings, backend: EmailBackend) -> sending.Sender:
    """What a lane sends with, as the flow's task builds it from the same settings."""
    return sending.Sender.from_settings(
        settings, engine=get_engine(settings.database_url), backend=backend
    )


def lane_of(
    settings: Settings,
    plan: sending.SendPlan,
    *,
    lane: int = 0,
    stop: sending.RunStop | None = None,
    backend: EmailBackend | None = None,
) -> sending.LaneReport:
    """Run one lane to its end in this thread, through `backend` or the configured one."""
    if backend is not None:
        return sending.send_lane(
            sender_for(settings, backend), plan, lane=lane, stop=stop or sending.RunStop()
        )
    with get_backend(settings) as opened:
        return sending.send_lane(
            sender_for(settings, opened), plan, lane=lane, stop=stop or sending.RunStop()
        )
