"""The email providers verdict-digest sends through: one line each, and nothing else to edit.

A provider's name is the value of `DIGEST_EMAIL_BACKEND` and the path of its event webhook
(`/webhooks/<name>` on `digest web`). Its adapters are named as "module:Class" and imported only
when used, the way Django names its mail backends: the sending backend (`digest/send/<name>.py`,
an `EmailBackend` with `from_settings`) and, if the provider reports events, the webhook
(`digest/webhooks/<name>.py`, an `EventWebhook`). Everything that provider's words or limits
decide (cancel deadline and slots, signatures, event names) lives in those two modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from typing import Any


@dataclass(frozen=True)
class Provider:
    name: str
    backend: str  # "module:Class" of its sending backend
    webhook: str | None = None  # "module:Class" of its event webhook, if it has one


PROVIDERS: dict[str, Provider] = {
    provider.name: provider
    for provider in (
        Provider("outbox", "digest.send.outbox:OutboxBackend"),
        Provider(
            "sendgrid",
            "digest.send.sendgrid:SendGridBackend",
            "digest.webhooks.sendgrid:SendGridWebhook",
        ),
    )
}


def load(target: str) -> Any:
    """The class a "module:Class" string names."""
    module, _, name = target.partition(":")
    return getattr(import_module(module), name)
