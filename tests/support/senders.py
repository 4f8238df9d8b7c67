"""A run's send for tests: the backend is opened here, handed in, and closed here."""

from __future__ import annotations

from digest.config import Settings
from digest.db import get_engine
from digest.delivery import sending
from digest.send import get_backend
from digest.send.base import EmailBackend


def sender_for(settings: Settings, backend: EmailBackend) -> sending.Sender:
    """What the run sends with, as the flow's task builds it from the same settings."""
    return sending.Sender.from_settings(
        settings, engine=get_engine(settings.database_url), backend=backend
    )


def send_of(
    settings: Settings,
    plan: sending.SendPlan,
    *,
    stop: sending.RunStop | None = None,
    backend: EmailBackend | None = None,
) -> sending.SendReport:
    """Run the send to its end in this thread, through `backend` or the configured one."""
    if backend is not None:
        return sending.send(sender_for(settings, backend), plan, stop=stop or sending.RunStop())
    with get_backend(settings) as opened:
        return sending.send(sender_for(settings, opened), plan, stop=stop or sending.RunStop())
