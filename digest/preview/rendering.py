"""The editor's preview: exactly what a run would send for one subscriber's variant, unsent.

It renders through the same functions as a run, from the frozen content when the week already
has a digest, and builds the message with the same MIME builder as the outbox.
"""

from __future__ import annotations

from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from digest.audience.addresses import email_key
from digest.config import Settings
from digest.content.compose import filter_for_categories
from digest.content.model import DigestContent
from digest.db import ensure_schema
from digest.delivery import ledger
from digest.delivery.sending import recipient_for
from digest.errors import NotFoundError
from digest.links import Links
from digest.models import Subscriber
from digest.run.preparation import Edition, prepare_digest, render_for_categories
from digest.send.base import OutgoingBatch, Recipient
from digest.send.messages import build_message
from digest.weeks import IsoWeek

# Tokens in a preview for no particular subscriber are made for this id, which no row has.
PREVIEW_SUBSCRIBER_ID = 0


@dataclass(frozen=True)
class Preview:
    """A rendered digest for one variant, with the message it would be."""

    week: str
    content: DigestContent  # the variant's content (filtered for the subscriber's categories)
    subject: str
    html: str
    text: str
    message: EmailMessage
    frozen: bool  # True when rendered from the digest a run already froze
    recipient: Recipient  # who it was rendered for, with their links and headers

    @property
    def headers(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.message.items()}


def _subscriber(engine: Engine, email: str) -> Subscriber:
    with Session(engine) as session:
        found = session.exec(
            select(Subscriber).where(Subscriber.email_key == email_key(email))
        ).first()
    if found is None:
        raise NotFoundError(
            f"No subscriber has the address {email!r}. Check the spelling, or import them with "
            "`digest subscribers import`, or preview without --email to see the every-category "
            "variant."
        )
    return found


def build_preview(settings: Settings, week: IsoWeek, *, email: str | None = None) -> Preview:
    engine = ensure_schema(settings.database_url)
    edition = Edition.from_settings(settings)
    prepared = prepare_digest(engine, edition, week, freeze=False)
    subscriber = _subscriber(engine, email) if email else None
    categories = list(subscriber.categories) if subscriber else []
    variant_content = filter_for_categories(prepared.content, categories)
    if variant_content is None:
        variant_content = prepared.content.model_copy(update={"pairs": [], "also_new": []})
    bodies = _bodies(engine, edition, prepared.digest_id, prepared.content, categories)
    if bodies is None:
        bodies = _bodies(engine, edition, None, variant_content, [])
    assert bodies is not None
    claimed = ledger.ClaimedRecipient(
        delivery_id=0,
        subscriber_id=subscriber.id if subscriber and subscriber.id else PREVIEW_SUBSCRIBER_ID,
        email=subscriber.email if subscriber else "subscriber@example.com",
        name=subscriber.name if subscriber else None,
    )
    recipient = recipient_for(Links.from_settings(settings), claimed)
    batch = OutgoingBatch(
        digest_id=prepared.digest_id or 0,
        week=str(week),
        subject=bodies["subject"],
        html=bodies["html"],
        text=bodies["text"],
        recipients=[recipient],
        from_email=settings.from_email,
        from_name=settings.from_name,
    )
    message = build_message(batch, recipient)
    html_part = message.get_body(("html",))
    text_part = message.get_body(("plain",))
    assert html_part is not None and text_part is not None
    return Preview(
        week=str(week),
        content=variant_content,
        subject=str(message["Subject"]),
        html=html_part.get_content(),
        text=text_part.get_content(),
        message=message,
        frozen=prepared.frozen_earlier,
        recipient=recipient,
    )


def _bodies(
    engine: Engine,
    edition: Edition,
    digest_id: int | None,
    content: DigestContent,
    categories: list[str],
) -> dict[str, Any] | None:
    """The variant's bodies: as a run froze them, else rendered now; None if it shows nothing."""
    if digest_id is not None:
        with engine.connect() as connection:
            stored = ledger.stored_variant(
                connection, digest_id=digest_id, key=ledger.variant_key(categories)
            )
        if stored is not None:
            return stored
    rendered = render_for_categories(edition, content, categories)
    if rendered is None:
        return None
    return {"subject": rendered.subject, "html": rendered.html, "text": rendered.text}


def preview_json(preview: Preview) -> dict[str, Any]:
    """The `digest preview --format json` document: week, subject, pairs, also-new, exclusions."""
    content = preview.content
    return {
        "week": preview.week,
        "subject": preview.subject,
        "pairs": [{"a": p.a.slug, "b": p.b.slug, "category": p.category} for p in content.pairs],
        "also_new": [t.slug for t in content.also_new],
        "excluded": [{"slug": e.slug, "reason": e.reason} for e in content.excluded],
    }


def write_files(preview: Preview, directory: Path) -> list[Path]:
    """`digest-<week>.html`, `.txt` and `.eml` in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / f"digest-{preview.week}"
    paths = [stem.with_suffix(".html"), stem.with_suffix(".txt"), stem.with_suffix(".eml")]
    paths[0].write_text(preview.html, encoding="utf-8")
    paths[1].write_text(preview.text, encoding="utf-8")
    paths[2].write_bytes(bytes(preview.message))
    return paths


def send_test(settings: Settings, preview: Preview, address: str) -> str | None:
    """Mail the preview to an editor through the backend: marked a test, recorded nowhere."""
    from digest.send import get_backend

    html_part = preview.message.get_body(("html",))
    text_part = preview.message.get_body(("plain",))
    assert html_part is not None and text_part is not None
    # The editor gets the bodies already filled, with the previewed subscriber's headers.
    recipient = preview.recipient._replace(email=address, name=None, substitutions={})
    batch = OutgoingBatch(
        digest_id=0,
        week=preview.week,
        subject=preview.subject,
        html=html_part.get_content(),
        text=text_part.get_content(),
        recipients=[recipient],
        from_email=settings.from_email,
        from_name=settings.from_name,
        is_test=True,
    )
    with get_backend(settings) as backend:
        return backend.send_batch(batch).message_id
