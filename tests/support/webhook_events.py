"""SendGrid's side of the event webhook: a key pair that signs as SendGrid signs, and events as
SendGrid posts them."""

from __future__ import annotations

import base64
import time
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from digest.webhooks.sendgrid import SIGNATURE_HEADER, TIMESTAMP_HEADER


class Signer:
    """What SendGrid does: ECDSA P-256 over SHA-256 of `timestamp + body`, base64 DER."""

    def __init__(self) -> None:
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        der = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_key_b64 = base64.b64encode(der).decode("ascii")

    def headers(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = self.private_key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            SIGNATURE_HEADER: base64.b64encode(signature).decode("ascii"),
            TIMESTAMP_HEADER: stamp,
            "Content-Type": "application/json",
        }


# Numbers not yet used in this session: event ids and addresses never collide.
fresh_ids = iter(range(1, 10**9))


def event(name: str, delivery_id: int | str | None, **extra: Any) -> dict[str, Any]:
    """A SendGrid event as posted, custom args at the top level as strings."""
    raw: dict[str, Any] = {
        "email": "ada@example.com",
        "timestamp": int(time.time()),
        "event": name,
        "sg_event_id": f"evt-{next(fresh_ids)}",
        "sg_message_id": "msg.filter0001",
        "digest_id": "1",
    }
    if delivery_id is not None:
        raw["delivery_id"] = str(delivery_id)
    raw.update(extra)
    return raw
