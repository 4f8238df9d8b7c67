"""The one small interface every way of sending implements, and the errors it may raise.

A batch is one content variant (subject, HTML and text bodies holding substitution tokens) and up
to 1,000 recipients, each with the token values and headers that are theirs alone. A backend
either accepts the whole batch (returns), refuses it for good (`PermanentSendError`), fails in a
way worth retrying (`TransientSendError`), or cannot send at all (`SendAuthError`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import NamedTuple, Protocol, Self, runtime_checkable

from digest.errors import SendAuthError
from digest.links import has_one_click_unsubscribe, recipient_headers
from digest.render.placeholders import subscriber_substitutions

__all__ = [
    "AmbiguousSendError",
    "BatchClosedError",
    "BatchResult",
    "CancelRefusedError",
    "EmailBackend",
    "EncodedRecipients",
    "OutgoingBatch",
    "PermanentSendError",
    "ProviderBatch",
    "Recipient",
    "RecipientEncoder",
    "SchedulingBackend",
    "SendAuthError",
    "TransientSendError",
    "delivery_ids_of",
    "substitute",
]


# A NamedTuple: a send builds 100,000 of these, and tuples are the cheapest immutable records.
class Recipient(NamedTuple):
    """One addressee of a batch, with the values of its personal tokens."""

    delivery_id: int
    email: str
    name: str | None
    # Token -> value for this recipient, e.g. {"%%unsubscribe_url%%": "https://..."}.
    substitutions: dict[str, str]
    # Per-recipient headers: List-Unsubscribe and List-Unsubscribe-Post.
    headers: dict[str, str]

    @classmethod
    def for_subscriber(
        cls,
        delivery_id: int,
        email: str,
        name: str | None,
        *,
        unsubscribe_url: str,
        preferences_url: str,
        vote_token: str,
    ) -> Recipient:
        """A subscriber with their own links, greeting, vote token and one-click unsubscribe
        headers: how the send and the preview both make a recipient."""
        return cls(
            delivery_id=delivery_id,
            email=email,
            name=name,
            substitutions=subscriber_substitutions(
                unsubscribe_url=unsubscribe_url,
                preferences_url=preferences_url,
                name=name,
                vote_token=vote_token,
            ),
            headers=recipient_headers(unsubscribe_url),
        )


# A backend's own writing of a request's recipients (a digest id and its recipients in, the bytes
# of the provider's request that carry them out). A module-level function, so that the process
# that builds the recipients can be handed it by name and write them there.
RecipientEncoder = Callable[[int, list[Recipient]], bytes]


@dataclass(frozen=True)
class EncodedRecipients:
    """A request's recipients as their backend's encoder wrote them, where they were built, and
    what the send needs to know of them: the sending process then only splices the bytes in."""

    delivery_ids: list[int]
    # Recipients whose message lacks a one-click unsubscribe header (counted for the report).
    without_unsubscribe_headers: int
    data: bytes

    @classmethod
    def encode(
        cls, encoder: RecipientEncoder, digest_id: int, recipients: list[Recipient]
    ) -> EncodedRecipients:
        return cls(
            delivery_ids=[r.delivery_id for r in recipients],
            without_unsubscribe_headers=_without_unsubscribe_headers(recipients),
            data=encoder(digest_id, recipients),
        )


def delivery_ids_of(recipients: list[Recipient] | EncodedRecipients) -> list[int]:
    """The rows a request's recipients are for, in order, encoded or not."""
    if isinstance(recipients, EncodedRecipients):
        return recipients.delivery_ids
    return [r.delivery_id for r in recipients]


def _without_unsubscribe_headers(recipients: list[Recipient]) -> int:
    return sum(1 for r in recipients if not has_one_click_unsubscribe(r.headers))


@dataclass(frozen=True)
class ProviderBatch:
    """A group of requests the provider holds until `send_at`, and can cancel until shortly
    before: the lever that turns an ambiguous answer into "cancelled, send again".

    A request may join it until `join_by`: an answer lost after waiting the whole request
    timeout must still leave time to cancel the batch before the provider's deadline.
    """

    id: str
    send_at: datetime
    join_by: datetime


@dataclass(frozen=True)
class OutgoingBatch:
    """One provider request's worth of mail: one body, many recipients."""

    digest_id: int
    week: str
    subject: str
    html: str
    text: str
    recipients: list[Recipient]
    from_email: str
    from_name: str
    category: str = "verdict-digest"
    is_test: bool = False
    extra_headers: dict[str, str] = field(default_factory=dict)
    # Held by the provider until its send time, cancellable till shortly before; None: at once.
    provider_batch: ProviderBatch | None = None
    # The recipients already encoded for the backend that sends the batch (its
    # `recipient_encoder`), in place of `recipients`, which is then left empty.
    encoded: EncodedRecipients | None = None

    def __post_init__(self) -> None:
        if self.encoded is not None and self.recipients:
            raise ValueError("a batch carries its recipients either encoded or not, not both")

    @property
    def delivery_ids(self) -> list[int]:
        """The rows the batch is for, in recipient order."""
        return delivery_ids_of(self.encoded if self.encoded is not None else self.recipients)

    @property
    def recipient_count(self) -> int:
        return len(self.encoded.delivery_ids) if self.encoded else len(self.recipients)

    @property
    def without_unsubscribe_headers(self) -> int:
        """Recipients whose message lacks a one-click unsubscribe header."""
        if self.encoded is not None:
            return self.encoded.without_unsubscribe_headers
        return _without_unsubscribe_headers(self.recipients)


@dataclass(frozen=True)
class BatchResult:
    """What the provider said when it accepted a batch."""

    message_id: str | None
    accepted: int


class TransientSendError(Exception):
    """Worth retrying later: rate limit, 5xx, timeout, dropped connection."""

    def __init__(self, reason: str, *, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class AmbiguousSendError(TransientSendError):
    """A scheduled request may or may not have been accepted (timeout, dropped connection, 5xx).

    Never retried blind: the sender cancels its provider batch, and sends again under a new one
    once the cancel is confirmed.
    """


class BatchClosedError(TransientSendError):
    """A held request could not leave before its provider batch stopped taking requests (a rate
    limit held it back): nothing was sent, and it goes again under the next batch."""


class CancelRefusedError(Exception):
    """The provider refused to cancel a batch (too late, unknown, too many cancels at once)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PermanentSendError(Exception):
    """The provider refused the batch as it is (HTTP 400); resending it unchanged cannot help.

    `refused` names the recipients the provider blamed (delivery id -> reason): the others were
    refused only for being in the same request. Empty when the request as a whole was refused
    (the sender, the content), which no recipient can fix.
    """

    def __init__(self, reason: str, *, refused: dict[int, str] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.refused = refused or {}


class EmailBackend(Protocol):
    """A way of sending; a context manager that closes only what it opened."""

    # Set by a backend that takes its batches' recipients encoded (`OutgoingBatch.encoded`):
    # a large send then encodes them in its building process, beside the sending one.
    recipient_encoder: RecipientEncoder | None

    def open(self) -> None: ...

    def close(self) -> None: ...

    def send_batch(self, batch: OutgoingBatch) -> BatchResult: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


@runtime_checkable
class SchedulingBackend(Protocol):
    """A backend whose requests can be held until a send time and cancelled before it."""

    # How many batches the provider keeps cancelled at once; a cancel beyond is refused.
    cancel_slots: int
    # How long before a batch's send time the provider stops honouring a cancel.
    cancel_deadline_seconds: int
    # How long one request may take before its answer counts as lost.
    request_timeout_seconds: float

    def new_batch_id(self) -> str:
        """A fresh provider batch id (safe to retry: an unused id costs nothing)."""
        ...

    def cancel_batch(self, batch_id: str) -> None:
        """Cancel the batch and confirm it. Raises CancelRefusedError when the provider refuses,
        TransientSendError when it cannot be reached."""
        ...

    def forget_cancel(self, batch_id: str) -> None:
        """Remove a cancel whose send time has passed, freeing one of the provider's slots."""
        ...


class BaseBackend:
    """Context-manager plumbing shared by the backends."""

    recipient_encoder: RecipientEncoder | None = None

    def open(self) -> None:
        return None

    def close(self) -> None:
        return None

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def substitute(body: str, substitutions: dict[str, str]) -> str:
    """Replace each token in `body` by its value (what SendGrid does server-side)."""
    for token, value in substitutions.items():
        body = body.replace(token, value)
    return body
