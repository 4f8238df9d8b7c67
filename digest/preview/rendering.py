"""The editor's preview: exactly what a run would send for one subscriber's variant, unsent.

It renders through the same functions as a run, from the frozen content when the week already
has a digest, and builds the message with the same MIME builder as the outbox. Its personal
links (unsubscribe, preferences) and, before the week is sent, "View in browser" lead to the web
app's /preview-link page instead, so an editor's click changes nobody's subscription and finds
no 404; a banner in both parts says so. A subscriber whom the run would skip gets no rendering:
`plan_preview` says why instead.
"""

from __future__ import annotations

import html as html_escaping
import re
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from digest.audience.addresses import email_key
from digest.config import Settings
from digest.content.compose import filter_for_categories
from digest.content.frozen import DigestContent
from digest.db import ensure_schema
from digest.delivery import ledger
from digest.errors import NotFoundError, PreviewSkippedError
from digest.links import Links
from digest.models import Digest, Subscriber
from digest.render.placeholders import PREVIEW_VOTE_TOKEN
from digest.run.preparation import Edition, prepare_digest, render_for_categories
from digest.send.base import OutgoingBatch, Recipient
from digest.send.messages import build_message
from digest.weeks import IsoWeek

# The web app's page that says a link came from a preview (digest/web/archive.py).
PREVIEW_LINK_PATH = "/preview-link"
BANNER_TEXT = (
    "PREVIEW: no subscriber got this copy. Its unsubscribe and preferences links, and View in "
    "browser before the week is sent, open a page that says so; they change nobody's "
    "subscription. "
    "Its Ship and Skip links cannot vote. "
    "The comparison pages go live when the week is sent."
)
_BODY_OPEN = re.compile(r"<body[^>]*>")
# The hidden preheader right after <body>: the banner goes after it, so that an inbox shows the
# preheader a reader would see, not the banner.
_PREHEADER = re.compile(r'\s*<div style="display:none;[^"]*">[^<]*</div>')


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
    variant_key: str | None = None  # the variant's file-name key with --email, else None

    @property
    def headers(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.message.items()}


@dataclass(frozen=True)
class SkippedPreview:
    """A subscriber the run would send nothing this week, and why: shown instead of an email."""

    week: str
    email: str
    categories: list[str]
    reason: str
    excluded: list[dict[str, str]]


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


def plan_preview(
    settings: Settings, week: IsoWeek, *, email: str | None = None
) -> Preview | SkippedPreview:
    """The preview of `email`'s variant (or the every-category one), or why they get nothing."""
    engine = ensure_schema(settings.database_url)
    edition = Edition.from_settings(settings)
    prepared = prepare_digest(engine, edition, week, freeze=False)
    subscriber = _subscriber(engine, email) if email else None
    categories = list(subscriber.categories) if subscriber else []
    variant_content = filter_for_categories(prepared.content, categories)
    if subscriber is not None:
        reason = skip_reason(subscriber, prepared.content, variant_content)
        if reason is not None:
            return SkippedPreview(
                week=str(week),
                email=subscriber.email,
                categories=categories,
                reason=reason,
                excluded=[e.model_dump() for e in prepared.content.excluded],
            )
    if variant_content is None:
        variant_content = prepared.content.model_copy(update={"pairs": [], "also_new": []})
    bodies = _bodies(engine, edition, prepared.digest_id, prepared.content, categories)
    if bodies is None:
        bodies = _bodies(engine, edition, None, variant_content, [])
    assert bodies is not None
    placeholder = f"{settings.site_url.rstrip('/')}{PREVIEW_LINK_PATH}"
    recipient = _preview_recipient(subscriber, placeholder)
    archive = Links.from_settings(settings).archive(str(week))
    if not _archived(engine, str(week)):
        bodies = {
            **bodies,
            # Matched up to the address: the archive link may carry `?r=` (the delivery's token).
            "html": bodies["html"].replace(f'href="{archive}', f'href="{placeholder}'),
            "text": bodies["text"].replace(archive, placeholder),
        }
    message = _message(settings, week, prepared.digest_id, bodies, recipient)
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
        variant_key=file_key(categories) if subscriber is not None else None,
    )


def build_preview(settings: Settings, week: IsoWeek, *, email: str | None = None) -> Preview:
    """The rendered preview; a subscriber the run would skip is a `PreviewSkippedError`."""
    planned = plan_preview(settings, week, email=email)
    if isinstance(planned, SkippedPreview):
        raise PreviewSkippedError(
            f"{planned.reason} Preview without --email to see the every-category email."
        )
    return planned


def skip_reason(
    subscriber: Subscriber, content: DigestContent, variant: DigestContent | None
) -> str | None:
    """Why the run would send `subscriber` nothing this week, or None when it sends them mail."""
    if subscriber.status != "active":
        return (
            f"{subscriber.email} gets nothing this week: their status is {subscriber.status}, "
            "and only active subscribers are sent the digest."
        )
    if content.is_empty:
        return f"{subscriber.email} gets nothing this week: no new tool was added to the catalog."
    if variant is None:
        covered = sorted(
            {p.category for p in content.pairs} | {t.category for t in content.also_new}
        )
        return (
            f"{subscriber.email} gets nothing this week: none of their categories "
            f"({', '.join(subscriber.categories)}) has a new tool or a head-to-head this week "
            f"(this week covers {', '.join(covered)})."
        )
    return None


def file_key(categories: list[str]) -> str:
    """A variant's key as a file-name part: "all" for every category, else the categories."""
    key = ledger.variant_key(categories)
    if not key:
        return "all"
    return re.sub(r"[^a-z0-9]+", "-", key.casefold()).strip("-") or "all"


def _preview_recipient(subscriber: Subscriber | None, placeholder: str) -> Recipient:
    """The previewed subscriber (or a stand-in) with every personal link on the preview page."""
    return Recipient.for_subscriber(
        0,
        subscriber.email if subscriber else "subscriber@example.com",
        subscriber.name if subscriber else None,
        unsubscribe_url=placeholder,
        preferences_url=placeholder,
        vote_token=PREVIEW_VOTE_TOKEN,
    )


def _archived(engine: Engine, week: str) -> bool:
    """Whether /archive/<week> serves the week: its digest was planned (sent)."""
    with Session(engine) as session:
        found = session.exec(
            select(Digest.id).where(Digest.week == week, Digest.planned_at.is_not(None))  # type: ignore[union-attr]
        ).first()
    return found is not None


def with_banner(bodies: dict[str, Any]) -> dict[str, Any]:
    """The bodies with the preview banner first in the HTML body and the text."""
    banner = (
        '<div style="background:#fef3c7;color:#78350f;border:2px solid #f59e0b;padding:10px 14px;'
        'font:14px/1.4 sans-serif;">' + html_escaping.escape(BANNER_TEXT) + "</div>"
    )
    page = bodies["html"]
    opened = _BODY_OPEN.search(page)
    at = opened.end() if opened else 0
    preheader = _PREHEADER.match(page, at)
    at = preheader.end() if preheader else at
    return {
        **bodies,
        "html": page[:at] + banner + page[at:],
        "text": f"[{BANNER_TEXT}]\n\n" + bodies["text"],
    }


def _message(
    settings: Settings,
    week: IsoWeek,
    digest_id: int | None,
    bodies: dict[str, Any],
    recipient: Recipient,
) -> EmailMessage:
    marked = with_banner(bodies)
    batch = OutgoingBatch(
        digest_id=digest_id or 0,
        week=str(week),
        subject=marked["subject"],
        html=marked["html"],
        text=marked["text"],
        recipients=[recipient],
        from_email=settings.from_email,
        from_name=settings.from_name,
    )
    return build_message(batch, recipient)


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


def nothing_to_send(week: str) -> str:
    """Why a week without new tools shows no email: every form of the preview says this."""
    return f"{week} has no new tools: its run sends nothing."


def preview_json(preview: Preview | SkippedPreview) -> dict[str, Any]:
    """The `digest preview --format json` document: week, subject, the editor's note (`intro`,
    null when none), pairs, also-new, exclusions, and whether the run sends this (`sends`);
    for a subscriber the run would skip, `skipped`, `reason` and `categories` too, and for a
    week without new tools, its `reason`."""
    if isinstance(preview, SkippedPreview):
        return {
            "week": preview.week,
            "subject": None,
            "intro": None,
            "pairs": [],
            "also_new": [],
            "excluded": preview.excluded,
            "skipped": True,
            "sends": False,
            "reason": preview.reason,
            "email": preview.email,
            "categories": preview.categories,
        }
    content = preview.content
    document: dict[str, Any] = {
        "week": preview.week,
        "subject": preview.subject,
        "intro": content.intro,
        "pairs": [
            {"a": p.a.slug, "b": p.b.slug, "category": p.category, "verdict": p.verdict}
            for p in content.pairs
        ],
        "also_new": [t.slug for t in content.also_new],
        "excluded": [{"slug": e.slug, "reason": e.reason} for e in content.excluded],
        "skipped": False,
        "sends": not content.is_empty,
    }
    if content.is_empty:
        document["reason"] = nothing_to_send(preview.week)
    return document


def write_files(preview: Preview, directory: Path) -> list[Path]:
    """`digest-<week>.html`, `.txt` and `.eml` in `directory`; a subscriber's variant (--email)
    as `digest-<week>-<variant>.*`, so previews of two variants never overwrite each other."""
    directory.mkdir(parents=True, exist_ok=True)
    name = f"digest-{preview.week}"
    if preview.variant_key is not None:
        name += f"-{preview.variant_key}"
    paths = [directory / f"{name}.{suffix}" for suffix in ("html", "txt", "eml")]
    paths[0].write_text(preview.html, encoding="utf-8")
    paths[1].write_text(preview.text, encoding="utf-8")
    paths[2].write_bytes(bytes(preview.message))
    return paths


# Every test copy's subject starts with this, whatever backend carries it.
TEST_MARK = "[TEST] "


def send_test(settings: Settings, preview: Preview, address: str) -> str | None:
    """Mail the preview to an editor through the backend: marked a test, recorded nowhere.

    The mark is put on the subject here, once, so that every backend sends it (SendGrid takes
    the batch's subject as it is)."""
    from digest.send import get_backend

    html_part = preview.message.get_body(("html",))
    text_part = preview.message.get_body(("plain",))
    assert html_part is not None and text_part is not None
    # The editor gets the bodies already filled, with the previewed subscriber's headers.
    recipient = preview.recipient._replace(email=address, name=None, substitutions={})
    batch = OutgoingBatch(
        digest_id=0,
        week=preview.week,
        subject=TEST_MARK + preview.subject,
        html=html_part.get_content(),
        text=text_part.get_content(),
        recipients=[recipient],
        from_email=settings.from_email,
        from_name=settings.from_name,
        is_test=True,
    )
    with get_backend(settings) as backend:
        return backend.send_batch(batch).message_id
