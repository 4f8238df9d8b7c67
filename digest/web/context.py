"""What every route of the web app shares: settings, database, key, pages, webhooks, sender."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from sqlalchemy.engine import Engine
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from digest.config import Settings
from digest.db import ensure_schema, session_scope
from digest.links import Links
from digest.providers import PROVIDERS, load
from digest.send.base import EmailBackend
from digest.tokens import BadTokenError, Purpose, read_token
from digest.web import csrf
from digest.web.pages import Pages
from digest.webhooks.base import EventWebhook

T = TypeVar("T")


class BackendFactory(Protocol):
    """Makes the backend the app sends with: `digest.send.get_backend`, or a test's own."""

    def __call__(self, settings: Settings, *, interactive: bool = False) -> EmailBackend:
        """`interactive` asks for a backend that gives up soon: someone waits for the page."""
        ...


# Our tokens are about 40 characters; anything far longer is not one and is not even checked.
_MAX_TOKEN = 200
# Forms here have a handful of short fields; multipart uploads are refused outright.
_FORM_LIMITS = {"max_files": 0, "max_fields": 200, "max_part_size": 64 * 1024}


@dataclass(frozen=True)
class WebContext:
    settings: Settings
    engine: Engine
    key: bytes
    links: Links
    pages: Pages
    # Provider name -> its webhook adapter's class, and the adapter (None: not configured).
    webhooks: dict[str, tuple[type[EventWebhook], EventWebhook | None]]
    secure_cookies: bool
    backend_factory: BackendFactory

    @classmethod
    def build(cls, settings: Settings, *, backend_factory: BackendFactory) -> WebContext:
        """Everything checked once at start-up, so a bad setting fails `digest web` at once."""
        return cls(
            settings=settings,
            engine=ensure_schema(settings.database_url),
            key=settings.signing_key(),
            links=Links.from_settings(settings),
            pages=Pages(settings),
            webhooks=event_webhooks(settings),
            secure_cookies=settings.site_url.startswith("https://"),
            backend_factory=backend_factory,
        )

    def subscriber_id(self, purpose: Purpose, token: str) -> int | None:
        """The subscriber a token names, or None for a forged, altered or wrong-purpose one."""
        if len(token) > _MAX_TOKEN:
            return None
        try:
            return read_token(self.key, purpose, token)
        except BadTokenError:
            return None

    async def db(self, work: Callable[[Session], T]) -> T:
        """Run `work` in one transaction on a worker thread, off the event loop."""

        def run() -> T:
            with session_scope(self.engine) as session:
                return work(session)

        return await run_in_threadpool(run)

    def csrf_field(self, request: Request, scope: str) -> tuple[str, str]:
        """(form field value, cookie nonce) for a page whose token is `scope`."""
        nonce = csrf.usable_nonce(request.cookies.get(csrf.COOKIE_NAME)) or csrf.new_nonce()
        return csrf.field_value(self.key, scope, nonce), nonce

    def csrf_ok(self, request: Request, form: FormData, scope: str) -> bool:
        submitted = form.get(csrf.FIELD_NAME)
        return csrf.is_valid(
            self.key,
            scope,
            request.cookies.get(csrf.COOKIE_NAME),
            submitted if isinstance(submitted, str) else None,
        )

    def set_csrf_cookie(self, response: Response, nonce: str) -> None:
        response.set_cookie(
            csrf.COOKIE_NAME,
            nonce,
            httponly=True,
            samesite="lax",
            secure=self.secure_cookies,
            path="/",
        )

    def csrf_failed(self, path: str) -> Response:
        return self.pages.message(
            title="This form has expired",
            lines=[
                "For your safety the form could not be accepted. Reload the page and try again."
            ],
            status=403,
            link=(path, "Reload the page"),
        )


def event_webhooks(
    settings: Settings,
) -> dict[str, tuple[type[EventWebhook], EventWebhook | None]]:
    """Every provider's event webhook adapter, built from the settings where configured."""
    found: dict[str, tuple[type[EventWebhook], EventWebhook | None]] = {}
    for name, provider in PROVIDERS.items():
        if provider.webhook is not None:
            adapter_class: type[EventWebhook] = load(provider.webhook)
            found[name] = (adapter_class, adapter_class.from_settings(settings))
    return found


async def read_form(request: Request) -> FormData:
    """The request's form fields, within the limits above."""
    return await request.form(**_FORM_LIMITS)


def client_ip(request: Request) -> str | None:
    """The visitor's address (X-Forwarded-For only from DIGEST_TRUSTED_PROXIES: proxies.py)."""
    return request.client.host if request.client else None


def mask_email(email: str) -> str:
    """`a…@example.com`: enough for a person to recognise their address, no more."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}…@{domain}" if domain else "…"
