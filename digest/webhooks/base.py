"""What a provider's event webhook adapter offers the web app: check, then translate.

The web app serves `POST /webhooks/<provider>` for every provider of `digest/providers.py` that
names a webhook, and asks its adapter only this: is the request authentic and fresh
(`verify`), and which events does its body hold (`parse`). The engagement report asks one more
thing of a stored event (`engagement`): which link a click followed, and whether an open was a
mail client's machine. Provider words stay in the adapter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self

from digest.config import Settings
from digest.delivery.events import NormalizedEvent


class WebhookRejected(Exception):
    """The request is not a fresh, authentic delivery from the provider; answer 403."""


class WebhookPayloadError(Exception):
    """The verified body is not a batch of events; answer 400."""


@dataclass(frozen=True)
class ParsedBatch:
    """A verified body's events that can be stored, and the count of items left out."""

    events: list[NormalizedEvent]
    skipped: int


@dataclass(frozen=True)
class Engagement:
    """What a stored event tells of its reader beyond its delivery state."""

    # An open by a mail client's privacy proxy (Apple Mail Privacy Protection), not a person.
    machine_open: bool = False
    # The link a click event followed, as the email carried it.
    url: str | None = None


class EventWebhook(Protocol):
    """One provider's signed event webhook."""

    # The provider's display name, for log lines.
    title: ClassVar[str]
    # The largest body the route reads; the provider's real batches stay far below.
    max_body_bytes: ClassVar[int]
    # Why every request is refused while the adapter is not configured, naming the setting.
    unconfigured: ClassVar[str]

    @classmethod
    def from_settings(cls, settings: Settings) -> Self | None:
        """The configured adapter; None when its settings are absent (every request: 403)."""
        ...

    def verify(self, body: bytes, headers: Mapping[str, str], *, now: float) -> None:
        """Return if the request is authentic and fresh; raise `WebhookRejected` otherwise."""
        ...

    def parse(self, body: bytes) -> ParsedBatch:
        """The events of a verified body; `WebhookPayloadError` if it is no event batch."""
        ...

    @classmethod
    def engagement(cls, raw: Mapping[str, Any]) -> Engagement:
        """What a stored event (its raw payload, as this adapter received it) says of the reader."""
        ...
