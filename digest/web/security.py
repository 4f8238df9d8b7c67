"""Security headers on every response, error pages included.

A pure ASGI wrapper outside the whole application, so even the 500 and 413 answers Starlette
writes itself carry them. A response that sets its own Content-Security-Policy or Cache-Control
(the archive, which shows email HTML) keeps it.
"""

from __future__ import annotations

import base64
import hashlib

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def style_hash(css: str) -> str:
    """The CSP source that allows exactly this inline stylesheet and no other."""
    digest = hashlib.sha256(css.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


def page_policy(css: str) -> str:
    """The app's own pages: no script, no outside resource, forms post only to this site."""
    return (
        f"default-src 'none'; style-src {style_hash(css)}; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )


# Archived emails carry inline styles and remote images (https only), never scripts or forms.
ARCHIVE_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
    "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)


class SecurityHeadersMiddleware:
    """Adds the security headers to every HTTP response that does not set them itself."""

    def __init__(self, app: ASGIApp, *, content_security_policy: str, https: bool) -> None:
        self.app = app
        self.defaults = {
            "Content-Security-Policy": content_security_policy,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY",
            "Cross-Origin-Opener-Policy": "same-origin",
            "Cross-Origin-Resource-Policy": "same-origin",
            "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
            # Pages hold personal links and choices: never kept by shared caches.
            "Cache-Control": "no-store",
        }
        if https:
            self.defaults["Strict-Transport-Security"] = "max-age=31536000"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.defaults.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
