"""Ways of sending, picked by DIGEST_EMAIL_BACKEND: one module per backend, one factory here.

`interactive=True` asks for a backend that gives up quickly, for a person waiting on a page;
each backend decides what that means for its provider.
"""

from __future__ import annotations

from collections.abc import Callable

from digest.config import Settings
from digest.send.base import EmailBackend


def _outbox(settings: Settings, interactive: bool) -> EmailBackend:
    from digest.send.outbox import OutboxBackend

    return OutboxBackend(settings.outbox_dir)


def _sendgrid(settings: Settings, interactive: bool) -> EmailBackend:
    from digest.send.sendgrid import SendGridBackend

    if not interactive:
        return SendGridBackend(settings)
    # One retry and a short timeout, then the page says so.
    return SendGridBackend(
        settings,
        max_attempts=min(settings.send_max_attempts, 2),
        timeout_seconds=min(settings.sendgrid_timeout_seconds, 10.0),
    )


BACKENDS: dict[str, Callable[[Settings, bool], EmailBackend]] = {
    "outbox": _outbox,
    "sendgrid": _sendgrid,
}


def get_backend(settings: Settings, *, interactive: bool = False) -> EmailBackend:
    """The backend named by DIGEST_EMAIL_BACKEND (validated by Settings), not yet opened."""
    return BACKENDS[settings.email_backend](settings, interactive)
