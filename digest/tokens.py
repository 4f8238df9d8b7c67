"""Signed, purpose-bound subscriber tokens for unsubscribe, preference and confirmation links.

A token is `<payload>.<signature>`, both base64url: the payload names the purpose and the
subscriber id, the signature is HMAC-SHA256 with DIGEST_SECRET_KEY over a domain prefix and the
payload. A token made for one purpose never verifies for another, and an altered one never
verifies at all. Signing must stay cheap: a 100,000-recipient send signs 200,000 tokens.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from enum import StrEnum
from functools import lru_cache


class Purpose(StrEnum):
    UNSUBSCRIBE = "unsub"
    PREFERENCES = "prefs"
    CONFIRM = "confirm"


class BadTokenError(ValueError):
    """The token is forged, altered, truncated or for another purpose."""


_DOMAIN = b"verdict-digest/token/"
_SIGNATURE_BYTES = 18
_SHA256_BLOCK = 64
_INNER_PAD = bytes(byte ^ 0x36 for byte in range(256))
_OUTER_PAD = bytes(byte ^ 0x5C for byte in range(256))
_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@lru_cache(maxsize=8)
def _keyed_hashes(key: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    """HMAC-SHA256 (RFC 2104) with the key already absorbed: (inner + domain prefix, outer).

    `hmac` sets up the key again for every message, which is most of its cost on messages this
    short; copying these two states instead halves the time per token, with the same bytes.
    """
    if len(key) > _SHA256_BLOCK:
        key = hashlib.sha256(key).digest()
    padded = key.ljust(_SHA256_BLOCK, b"\0")
    inner = hashlib.sha256(padded.translate(_INNER_PAD))
    inner.update(_DOMAIN)
    return inner, hashlib.sha256(padded.translate(_OUTER_PAD))


def _signature(key: bytes, payload: str) -> str:
    inner_start, outer_start = _keyed_hashes(key)
    inner = inner_start.copy()
    inner.update(payload.encode())
    outer = outer_start.copy()
    outer.update(inner.digest())
    return _b64(outer.digest()[:_SIGNATURE_BYTES])


def make_token(key: bytes, purpose: Purpose, subscriber_id: int) -> str:
    payload = _b64(f"{purpose.value}:{subscriber_id}".encode())
    return f"{payload}.{_signature(key, payload)}"


def read_token(key: bytes, purpose: Purpose, token: str) -> int:
    """The subscriber id inside a valid token for `purpose`; `BadTokenError` otherwise."""
    payload, sep, signature = token.partition(".")
    if not sep or not payload or not signature:
        raise BadTokenError("malformed token")
    if not hmac.compare_digest(_signature(key, payload), signature):
        raise BadTokenError("bad signature")
    try:
        got_purpose, _, raw_id = _unb64(payload).decode("ascii").partition(":")
        subscriber_id = int(raw_id)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadTokenError("unreadable payload") from exc
    if got_purpose != purpose.value:
        raise BadTokenError("token is for another purpose")
    return subscriber_id
