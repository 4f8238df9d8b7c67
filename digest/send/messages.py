"""RFC 5322 messages for one recipient: what the outbox writes and what `preview` shows.

The same function builds the outbox's files and the editor's preview, so what an editor sees is
byte for byte what the outbox backend would write for that subscriber.
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from digest.send.base import OutgoingBatch, Recipient, substitute
from digest.text import DISPLAY_NAME_LIMIT, clean_text, decoded_words


def personal_bodies(batch: OutgoingBatch, recipient: Recipient) -> tuple[str, str, str]:
    """(subject, text, html) with the recipient's tokens filled in."""
    subs = recipient.substitutions
    return (
        substitute(batch.subject, subs),
        substitute(batch.text, subs),
        substitute(batch.html, subs),
    )


def _address(name: str | None, email: str) -> Address:
    """One mailbox; a name with line breaks or other control characters is put on one line.

    Imports refuse such names now; rows stored before that are tidied here: nothing
    `digest.text` removes (direction and invisible characters among them), line breaks made
    spaces, at most DISPLAY_NAME_LIMIT characters, so the header stays one readable line.
    Encoded words are decoded first (`decoded_words`), so whatever they hide is tidied too.
    """
    shown = clean_text(decoded_words(name or ""))[0]
    if any(unicodedata.category(ch) == "Cc" for ch in shown):
        spaced = (" " if unicodedata.category(ch) == "Cc" else ch for ch in shown)
        shown = " ".join("".join(spaced).split())
    return Address(display_name=shown[:DISPLAY_NAME_LIMIT], addr_spec=email)


def build_message(
    batch: OutgoingBatch, recipient: Recipient, *, now: datetime | None = None
) -> EmailMessage:
    """One multipart/alternative message (text first, then HTML) addressed to one person."""
    subject, text, body_html = personal_bodies(batch, recipient)
    message = EmailMessage()
    # Address quotes or encodes the whole name, so a comma in "Zoë O'Brien, PhD" stays in it.
    message["From"] = _address(batch.from_name, batch.from_email)
    message["To"] = _address(recipient.name, recipient.email)
    message["Subject"] = subject  # a test copy's subject carries its mark already
    message["Date"] = format_datetime(now or datetime.now(UTC))
    domain = batch.from_email.rpartition("@")[2] or "localhost"
    message["Message-ID"] = make_msgid(
        idstring=f"d{batch.digest_id}r{recipient.delivery_id}", domain=domain
    )
    for name, value in {**batch.extra_headers, **recipient.headers}.items():
        message[name] = value
    if batch.is_test:
        message["X-Digest-Test"] = "yes"
    message.set_content(text, subtype="plain", charset="utf-8")
    message.add_alternative(body_html, subtype="html", charset="utf-8")
    return message
