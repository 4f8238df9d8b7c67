"""Point the application's SendGrid backend at the project's fake, the way a deployment would."""

from __future__ import annotations

import pytest

from digest.config import Settings, get_settings
from tests.fakes.fake_sendgrid import FakeSendGrid


def send_through(monkeypatch: pytest.MonkeyPatch, fake: FakeSendGrid, **env: str) -> Settings:
    """Settings that send through `fake` with its key, plus other variables given as NAME=value."""
    monkeypatch.setenv("DIGEST_EMAIL_BACKEND", "sendgrid")
    monkeypatch.setenv("SENDGRID_API_KEY", fake.api_key)
    monkeypatch.setenv("DIGEST_SENDGRID_HOST", fake.url)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    return get_settings()
