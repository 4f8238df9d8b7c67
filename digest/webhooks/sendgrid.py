"""SendGrid's signed Event Webhook: check that a request really came from SendGrid, and translate
its events into the project's delivery states.

SendGrid signs `timestamp + raw body` with ECDSA P-256 / SHA-256 and sends the base64 DER
signature and the timestamp in two headers; the public key (base64 DER) is shown in its mail
settings and configured here as DIGEST_SENDGRID_WEBHOOK_PUBLIC_KEY. SendGrid's own word for
things ends in this module: the rest of the project sees `NormalizedEvent`s only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Self

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from sendgrid.helpers.eventwebhook import EventWebhook, EventWebhookHeader

from digest.config import Settings
from digest.delivery.events import NormalizedEvent
from digest.errors import ConfigError
from digest.states import DeliveryState, SubscriberStatus
from digest.webhooks.base import (
    Engagement,
    ParsedBatch,
    WebhookPayloadError,
    WebhookRejected,
)

log = logging.getLogger(__name__)

SIGNATURE_HEADER: str = EventWebhookHeader.SIGNATURE
TIMESTAMP_HEADER: str = EventWebhookHeader.TIMESTAMP

# A signed request older than this is refused: a captured request cannot be replayed later.
MAX_AGE_SECONDS = 600
# Clock skew tolerated the other way; anything further ahead is as suspect as a stale one.
MAX_AHEAD_SECONDS = 300

# Delivery ids are our INTEGER primary keys.
_MAX_ID = 2**31 - 1
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")


# Real events are flat; anything nested deeper is no event of SendGrid's.
MAX_EVENT_DEPTH = 16


def _storable_text(text: str) -> bool:
    # PostgreSQL's text and jsonb refuse NUL; no UTF-8 column takes a lone surrogate.
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def storable(value: Any, depth: int = 0) -> bool:
    """Whether every database can store the JSON value as it came (rule: `_storable_text`)."""
    if depth > MAX_EVENT_DEPTH:
        return False
    if isinstance(value, str):
        return _storable_text(value)
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_storable_text(key) and storable(item, depth + 1) for key, item in value.items())
    if isinstance(value, list):
        return all(storable(item, depth + 1) for item in value)
    return True


def _clean_public_key(text: str) -> str:
    """The base64 body of the key, whether pasted bare or as a PEM block."""
    lines = [line.strip() for line in text.strip().splitlines()]
    return "".join(line for line in lines if line and not line.startswith("-----"))


class SendGridWebhook:
    """Verifies SendGrid's signed event batches and normalizes their events."""

    title: ClassVar[str] = "SendGrid"
    # SendGrid posts batches of events; a few MB is far above any real one.
    max_body_bytes: ClassVar[int] = 5 * 1024 * 1024
    unconfigured: ClassVar[str] = (
        "DIGEST_SENDGRID_WEBHOOK_PUBLIC_KEY is not set, so no request can be verified"
    )

    # SendGrid event -> (the delivery state it proves, what it makes of the subscriber).
    EVENTS: ClassVar[dict[str, tuple[DeliveryState | None, SubscriberStatus | None]]] = {
        "processed": (DeliveryState.SENT, None),  # queued at SendGrid: confirms an accepted send
        # The receiver said "later"; SendGrid retries for up to 72 hours.
        "deferred": (DeliveryState.DEFERRED, None),
        "delivered": (DeliveryState.DELIVERED, None),
        "open": (DeliveryState.OPENED, None),
        "click": (DeliveryState.CLICKED, None),
        # Never attempted; DROP_REASONS below says when the person is gone.
        "dropped": (DeliveryState.DROPPED, None),
        "bounce": (DeliveryState.BOUNCED, SubscriberStatus.BOUNCED),  # hard: the address is dead
        # Soft bounce: arrives as event "bounce" with type "blocked"; the address still works.
        "blocked": (DeliveryState.BOUNCED, None),
        "spamreport": (DeliveryState.COMPLAINED, SubscriberStatus.COMPLAINED),
        "unsubscribe": (DeliveryState.UNSUBSCRIBED, SubscriberStatus.UNSUBSCRIBED),
        "group_unsubscribe": (DeliveryState.UNSUBSCRIBED, SubscriberStatus.UNSUBSCRIBED),
        # A resubscribe at SendGrid is not one here: only the person's own act on our pages is.
        "group_resubscribe": (None, None),
    }

    # A drop because the address sits on one of SendGrid's suppression lists tells us the same.
    DROP_REASONS: ClassVar[dict[str, SubscriberStatus]] = {
        "bounced address": SubscriberStatus.BOUNCED,
        "invalid": SubscriberStatus.BOUNCED,
        "spam reporting address": SubscriberStatus.COMPLAINED,
        "unsubscribed address": SubscriberStatus.UNSUBSCRIBED,
    }

    def __init__(self, public_key: str) -> None:
        try:
            self._verifier = EventWebhook(_clean_public_key(public_key))
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise ConfigError(
                "DIGEST_SENDGRID_WEBHOOK_PUBLIC_KEY is not a readable public key. Copy the "
                "verification key from SendGrid's Mail Settings > Signed Event Webhook as shown "
                "there (base64)."
            ) from exc
        if not isinstance(self._verifier.public_key, ec.EllipticCurvePublicKey):
            raise ConfigError(
                "DIGEST_SENDGRID_WEBHOOK_PUBLIC_KEY is not an elliptic-curve key. Use the "
                "verification key of SendGrid's Signed Event Webhook."
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> Self | None:
        public_key = (settings.sendgrid_webhook_public_key or "").strip()
        return cls(public_key) if public_key else None

    def verify(self, body: bytes, headers: Mapping[str, str], *, now: float) -> None:
        """Return if the request is authentic and fresh; raise `WebhookRejected` otherwise."""
        self.verify_signature(
            body, headers.get(SIGNATURE_HEADER), headers.get(TIMESTAMP_HEADER), now=now
        )

    def verify_signature(
        self, body: bytes, signature: str | None, timestamp: str | None, *, now: float
    ) -> None:
        """`verify`, given the two headers SendGrid signs with."""
        if not signature or not timestamp:
            raise WebhookRejected("signature or timestamp header missing")
        if not _TIMESTAMP.match(timestamp):
            raise WebhookRejected("timestamp header is not a Unix time")
        age = now - int(timestamp)
        if age > MAX_AGE_SECONDS:
            raise WebhookRejected("timestamp is too old (stale or replayed request)")
        if age < -MAX_AHEAD_SECONDS:
            raise WebhookRejected("timestamp is in the future")
        try:
            # The library signs text: a body that is not UTF-8 cannot be what SendGrid signed.
            payload = body.decode("utf-8")
            valid = self._verifier.verify_signature(payload, signature, timestamp)
        except (ValueError, TypeError, InvalidSignature) as exc:
            # A malformed signature (bad base64, bad DER) raises inside the library.
            raise WebhookRejected("signature is malformed") from exc
        if not valid:
            raise WebhookRejected("signature does not match the body")

    def parse(self, body: bytes) -> ParsedBatch:
        return self.parse_batch(body)

    @classmethod
    def parse_batch(cls, body: bytes) -> ParsedBatch:
        """The storable events of a verified body, and how many items were skipped."""
        try:
            data = json.loads(body)
        except RecursionError as exc:
            raise WebhookPayloadError("body nests too deeply to be an event batch") from exc
        except ValueError as exc:  # not JSON, not UTF-8, or a number past Python's digit limit
            raise WebhookPayloadError("body is not JSON") from exc
        if not isinstance(data, list):
            raise WebhookPayloadError("body is not a JSON array of events")
        events = [cls.normalize(item) for item in data if isinstance(item, dict) and storable(item)]
        skipped = len(data) - len(events)
        if skipped:
            log.warning(
                "skipped %d webhook item(s): not objects, or holding what no database stores "
                "(NaN or Infinity, NUL, lone surrogates, nesting deeper than %d)",
                skipped,
                MAX_EVENT_DEPTH,
            )
        return ParsedBatch(events=events, skipped=skipped)

    @classmethod
    def normalize(cls, raw: dict[str, Any]) -> NormalizedEvent:
        """One SendGrid event in the project's words; the raw event is kept as it came."""
        name = str(raw.get("event") or "")[:100]
        key = name
        if name == "bounce" and raw.get("type") == "blocked":
            key = "blocked"
        state, suppress_as = cls.EVENTS.get(key, (None, None))
        if name == "open" and raw.get("sg_machine_open") is True:
            # Apple Mail Privacy Protection fetches every message: proof of delivery, not reading.
            state = DeliveryState.DELIVERED
        if name == "dropped":
            suppress_as = cls.DROP_REASONS.get(str(raw.get("reason") or "").strip().casefold())
        email = raw.get("email")
        return NormalizedEvent(
            provider_event_id=_event_id(raw),
            provider_event=name,
            # custom_args come back as top-level keys of the event, as strings.
            delivery_id=_delivery_id(raw.get("delivery_id")),
            state=state,
            suppress_as=suppress_as,
            # SendGrid names the recipient of every event: one without names no one of ours.
            email=email if isinstance(email, str) else "",
            occurred_at=_occurred_at(raw.get("timestamp")),
            raw=raw,
        )

    @classmethod
    def engagement(cls, raw: Mapping[str, Any]) -> Engagement:
        """A click's `url`; an open SendGrid marks `sg_machine_open` (Apple Mail Privacy
        Protection fetched it, no person opened it)."""
        name = raw.get("event")
        url = raw.get("url")
        return Engagement(
            machine_open=name == "open" and raw.get("sg_machine_open") is True,
            url=url if name == "click" and isinstance(url, str) and url else None,
        )


def _event_id(raw: dict[str, Any]) -> str:
    """SendGrid's sg_event_id, or a digest of the event when it has none (old `dropped` events)."""
    given = raw.get("sg_event_id")
    if isinstance(given, str) and given and len(given) <= 150:
        return given
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return "sha256:" + hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _delivery_id(value: Any) -> int | None:
    text = str(value).strip() if isinstance(value, (str, int)) else ""
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        return None
    number = int(text)
    return number if 0 < number <= _MAX_ID else None


def _occurred_at(value: Any) -> datetime | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None
