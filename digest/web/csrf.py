"""CSRF protection for the forms that add mail (preferences, re-subscribe, re-confirm).

Double submit, signed: a random nonce lives in an HttpOnly SameSite=Lax cookie, and the form
carries `nonce.signature`, the signature binding the nonce to the page's own token. A POST passes
only when the cookie and the field agree and the signature is ours, which a page on another site
can neither read nor forge. Unsubscribing needs none: mailbox providers POST it themselves.
"""

from __future__ import annotations

import base64
import hmac
import re
import secrets

from digest.tokens import sign

COOKIE_NAME = "digest_csrf"
FIELD_NAME = "csrf"
_NONCE = re.compile(r"^[A-Za-z0-9_-]{22}$")
_DOMAIN = b"verdict-digest/csrf/"


def new_nonce() -> str:
    return secrets.token_urlsafe(16)


def usable_nonce(cookie: str | None) -> str | None:
    """The cookie's nonce if it is well formed, so a second tab keeps the first one's valid."""
    return cookie if cookie and _NONCE.match(cookie) else None


def _signature(key: bytes, scope: str, nonce: str) -> str:
    mac = sign(key, domain=_DOMAIN, message=f"{scope}/{nonce}".encode())
    return base64.urlsafe_b64encode(mac[:18]).decode("ascii")


def field_value(key: bytes, scope: str, nonce: str) -> str:
    """The hidden form value for a page whose token is `scope`."""
    return f"{nonce}.{_signature(key, scope, nonce)}"


def is_valid(key: bytes, scope: str, cookie: str | None, submitted: str | None) -> bool:
    """Whether a POST carries a field that matches its cookie and was signed for this page."""
    if not cookie or not submitted:
        return False
    nonce, sep, signature = submitted.partition(".")
    if not sep or not hmac.compare_digest(nonce.encode(), cookie.encode()):
        return False
    return hmac.compare_digest(signature.encode(), _signature(key, scope, nonce).encode())
