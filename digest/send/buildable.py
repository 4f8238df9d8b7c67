"""Every message of a batch built before any is sent, so one bad recipient fails alone.

A recipient whose message cannot be built (an address with a line break, a non-ASCII local
part, a name whose encoded word would write a header of its own) raises `PermanentSendError`
with `refused` naming only them, before anything is written: the send loop fails exactly those
rows and sends the others again, each once.
"""

from __future__ import annotations

from email.errors import MessageError
from email.message import EmailMessage
from email.parser import BytesHeaderParser

from digest.send.base import OutgoingBatch, PermanentSendError, Recipient
from digest.send.messages import build_message


def _built(batch: OutgoingBatch, recipient: Recipient) -> tuple[EmailMessage, bytes] | str:
    """The message and its bytes, or why it cannot be built."""
    try:
        message = build_message(batch, recipient)
        data = bytes(message)
    except (ValueError, UnicodeError, MessageError) as exc:
        return f"the message cannot be built for this recipient: {exc}"
    written = [name.lower() for name in BytesHeaderParser().parsebytes(data)]
    if written != [name.lower() for name in message]:
        # An encoded word in a name can decode to a line break and start a header of its own.
        return "the message cannot be built for this recipient: the name would add a header"
    return message, data


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
