"""SendGrid's Mail Send request body: the personalizations, and the body around them.

Apart from the backend (`sendgrid.py`) because the recipient-building process imports it to
encode each request's personalizations beside the sending process: it imports nothing heavier
than orjson (0.06 s of start-up, where the backend's module takes 0.3 s).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from digest.send.base import OutgoingBatch, Recipient
from digest.text import decoded_words

# RFC 5322 specials: SendGrid drops a to.name with a bare comma or semicolon, so such names go
# as a quoted-string.
_NAME_NEEDS_CARE = re.compile(r'[()<>\[\]:;@\\,."]')


def _display_name(name: str) -> str | None:
    """A to.name SendGrid delivers as given: an RFC 5322 quoted-string when it holds a special."""
    if "=?" in name:  # as the outbox's header has it: the text mail apps would show
        name = decoded_words(name)
    # Line breaks would end the header SendGrid writes; other spacing is kept exactly.
    flat = " ".join(name.split()) if any(ch in name for ch in "\r\n\t") else name
    if not flat.strip():
        return None
    if not _NAME_NEEDS_CARE.search(flat):
        return flat
    escaped = flat.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _tracking(is_test: bool) -> dict[str, Any]:
    """SendGrid's tracking, said in every request rather than left to the account's defaults.

    Our own List-Unsubscribe and footer link handle unsubscribes, never SendGrid's. Clicks are
    tracked in the HTML part only: links to our own pages carry `clicktracking="off"` and are
    counted by `digest web` itself, and the text part's links (its unsubscribe link among them)
    stay as written. A test copy to an editor is tracked not at all: its clicks are no reader's.
    """
    return {
        "subscription_tracking": {"enable": False},
        "click_tracking": {"enable": not is_test, "enable_text": False},
        "open_tracking": {"enable": not is_test},
    }


def encode_personalizations(digest_id: int, recipients: list[Recipient]) -> bytes:
    """The `personalizations` of a Mail Send request, as JSON: one per recipient, in order.

    The backend's `recipient_encoder`: a large send runs it in its building process, so the
    sending process only splices the bytes into the request (`request_body`)."""
    digest = str(digest_id)
    personalizations: list[dict[str, Any]] = []
    append = personalizations.append
    for recipient in recipients:
        to: dict[str, str] = {"email": recipient.email}
        name = _display_name(recipient.name) if recipient.name else None
        if name:
            to["name"] = name
        person: dict[str, Any] = {
            "to": [to],
            # custom_args values must be strings; the webhook finds the row by delivery_id.
            "custom_args": {"digest_id": digest, "delivery_id": str(recipient.delivery_id)},
        }
        if recipient.substitutions:
            person["substitutions"] = recipient.substitutions
        if recipient.headers:
            person["headers"] = recipient.headers
        append(person)
    # orjson: compact UTF-8 (no \u escapes), five times faster than json.
    return orjson.dumps(personalizations)


def request_body(batch: OutgoingBatch) -> bytes:
    """The Mail Send request body of one batch, as sent: its personalizations (encoded
    already, or now) spliced into the rest of the body."""
    people = (
        batch.encoded.data
        if batch.encoded is not None
        else encode_personalizations(batch.digest_id, batch.recipients)
    )
    rest = orjson.dumps(_body_but_personalizations(batch))
    return b'{"personalizations":' + people + b"," + rest[1:]


def build_request_body(batch: OutgoingBatch) -> dict[str, Any]:
    """The request body as data (what tests and the benchmark read)."""
    body: dict[str, Any] = orjson.loads(request_body(batch))
    return body


def _body_but_personalizations(batch: OutgoingBatch) -> dict[str, Any]:
    sender: dict[str, str] = {"email": batch.from_email}
    if batch.from_name:
        sender["name"] = batch.from_name
    # SendGrid requires text/plain before text/html.
    content = [
        {"type": kind, "value": value}
        for kind, value in (("text/plain", batch.text), ("text/html", batch.html))
        if value
    ]
    body: dict[str, Any] = {
        "from": sender,
        "subject": batch.subject,
        "content": content,
        "categories": [batch.category, "test"] if batch.is_test else [batch.category],
        "tracking_settings": _tracking(batch.is_test),
    }
    if batch.extra_headers:
        body["headers"] = batch.extra_headers
    if batch.provider_batch is not None:
        body["batch_id"] = batch.provider_batch.id
        body["send_at"] = int(batch.provider_batch.send_at.timestamp())
    return body
