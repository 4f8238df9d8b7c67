"""Ways of sending, picked by DIGEST_EMAIL_BACKEND: one module per backend, one factory here."""

from __future__ import annotations

from collections.abc import Callable

from digest.config import Settings
from digest.send.base import EmailBackend


def _outbox(settings: Settings) -> EmailBackend:
    from digest.send.outbox import OutboxBackend

    return OutboxBackend(settings.outbox_dir)


def _sendgrid(settings: Settings) -> EmailBackend:
    from digest.send.sendgrid import SendGridBackend

    return SendGridBackend(settings)


def _memory(settings: Settings) -> EmailBackend:
    from digest.send.memory import MemoryBackend

    return MemoryBackend()


BACKENDS: dict[str, Callable[[Settings], EmailBackend]] = {
    "outbox": _outbox,
    "sendgrid": _sendgrid,
    "memory": _memory,
}


def get_backend(settings: Settings) -> EmailBackend:
    """The backend named by DIGEST_EMAIL_BACKEND (validated by Settings)."""
    return BACKENDS[settings.email_backend](settings)
