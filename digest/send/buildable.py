"""Every message of a batch built before any is sent, so one bad recipient fails alone.

A recipient whose message cannot be built (an address with a line break, a non-ASCII local
part) raises `PermanentSendError` with `refused` naming only them, before anything is written:
the send loop fails exactly those rows and sends the others again, each once.
"""

from __future__ import annotations

from email.errors import MessageError
from email.message import EmailMessage

from digest.send.base import OutgoingBatch, PermanentSendError, Recipient
from digest.send.messages import build_message


def _built(batch: OutgoingBatch, recipient: Recipient) -> tuple[EmailMessage, bytes] | str:
    """The message and its bytes, or why it cannot be built."""
    try:
        message = build_message(batch, recipient)
        return message, bytes(message)
    except (ValueError, UnicodeError, MessageError) as exc:
        return f"the message cannot be built for this recipient: {exc}"


def build_all(batch: OutgoingBatch) -> list[tuple[Recipient, EmailMessage, bytes]]:
    """Each recipient with its built message; `PermanentSendError` naming any that cannot be."""
    built: list[tuple[Recipient, EmailMessage, bytes]] = []
    refused: dict[int, str] = {}
    for recipient in batch.recipients:
        outcome = _built(batch, recipient)
        if isinstance(outcome, str):
            refused[recipient.delivery_id] = outcome
        else:
            built.append((recipient, *outcome))
    if refused:
        raise PermanentSendError(
            f"{len(refused)} recipient(s) have an address or name no message can carry",
            refused=refused,
        )
    return built
