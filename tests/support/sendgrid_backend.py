"""The SendGrid backend built for the fake SendGrid: its key, short backoff, and waits recorded
instead of slept."""

from __future__ import annotations

import random
from typing import Any

from digest.config import Settings
from digest.send.sendgrid import SendGridBackend

API_KEY = "SG.test-key-for-the-fake"


class SleepLog:
    """Records the waits the backend asks for, without waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def make_settings(url: str, key: str | None = API_KEY, timeout: float = 5.0) -> Settings:
    values: dict[str, Any] = {
        "DIGEST_SENDGRID_HOST": url,
        "DIGEST_SENDGRID_TIMEOUT_SECONDS": timeout,
        "DIGEST_EMAIL_BACKEND": "sendgrid",
    }
    if key is not None:
        values["SENDGRID_API_KEY"] = key
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def make_backend(url: str, **kwargs: Any) -> tuple[SendGridBackend, SleepLog]:
    sleeps = SleepLog()
    settings = make_settings(
        url, key=kwargs.pop("key", API_KEY), timeout=kwargs.pop("timeout", 5.0)
    )
    kwargs.setdefault("max_attempts", 4)
    kwargs.setdefault("backoff_base_seconds", 0.01)
    kwargs.setdefault("backoff_max_seconds", 0.05)
    backend = SendGridBackend(settings, sleep=sleeps, rng=random.Random(7), **kwargs)
    return backend, sleeps
