"""The double opt-in email: one message, one recipient, through the web app's backend.

It is not a digest, so it has no digest or delivery row: it goes out as a batch with
`digest_id` 0, delivery id 0 and week `CONFIRMATION_WEEK`, and carries `X-Digest-Kind:
confirmation`. The outbox backend files it under `<outbox>/confirm/`; through SendGrid its events
carry delivery id 0, which the webhook records without touching any delivery row.
"""

from __future__ import annotations

from digest.config import Settings
from digest.send.base import BatchResult, OutgoingBatch, Recipient
from digest.web.context import BackendFactory
from digest.web.pages import Pages

CONFIRMATION_WEEK = "confirm"
CONFIRMATION_CATEGORY = "verdict-digest-confirmation"
KIND_HEADER = "X-Digest-Kind"


def confirmation_batch(
    settings: Settings, pages: Pages, *, email: str, confirm_url: str
) -> OutgoingBatch:
    """The confirmation message for `email`, its link already in place."""
    return OutgoingBatch(
        digest_id=0,
        week=CONFIRMATION_WEEK,
        subject=f"Confirm your subscription to {settings.from_name}",
        html=pages.text("confirm_email.html", confirm_url=confirm_url),
        text=pages.text("confirm_email.txt", confirm_url=confirm_url),
        recipients=[Recipient(delivery_id=0, email=email, name=None, substitutions={}, headers={})],
        from_email=settings.from_email,
        from_name=settings.from_name,
        category=CONFIRMATION_CATEGORY,
        extra_headers={KIND_HEADER: "confirmation"},
    )


def send_confirmation(
    settings: Settings,
    pages: Pages,
    *,
    backend_factory: BackendFactory,
    email: str,
    confirm_url: str,
) -> BatchResult:
    """Send it now; the backend's errors (transient, permanent, auth) reach the caller."""
    batch = confirmation_batch(settings, pages, email=email, confirm_url=confirm_url)
    # Someone is waiting for the page: the backend gives up soon, then the page says so.
    with backend_factory(settings, interactive=True) as backend:
        return backend.send_batch(batch)
