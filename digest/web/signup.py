"""Sign-up with double opt-in: the form, the confirmation email, the confirm link.

Whatever happened to the address (new, pending, active, unsubscribed, bounced), the form answers
the same "check your inbox" page in the same time: the confirmation email is queued for a worker
(`mail_queue`), so no provider call or error shows in the answer. Sign-ups are limited per IP,
per mailbox and overall (`throttle`), with a 429 page. The confirm link never acts on GET or
HEAD (mail scanners prefetch links): it shows a page whose button (POST) confirms. Confirm
tokens carry their signed issue time and expire after DIGEST_CONFIRM_TOKEN_DAYS.
The sign-up form itself takes no CSRF value, so the main site can embed it: the emailed link is
what proves that the address wants the digest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Literal

from sqlmodel import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from digest.audience.categories import catalog_categories
from digest.audience.lifecycle import (
    SubscriptionError,
    confirm,
    release_confirmation,
    request_subscription,
    reserve_confirmation,
)
from digest.db import session_scope
from digest.errors import NotFoundError
from digest.models import Subscriber
from digest.states import SubscriberStatus
from digest.tokens import (
    BadTokenError,
    ExpiredTokenError,
    Purpose,
    make_timed_token,
    make_token,
    read_timed_token,
)
from digest.web.categories import Choice, not_offered, not_offered_sentence, offered, pick
from digest.web.context import WebContext, client_ip, mask_email, read_form
from digest.web.mail_queue import ConfirmationMailer
from digest.web.throttle import Limits, SignupLimiter

log = logging.getLogger(__name__)

# A sign-up's subscriber, and the time its confirmation was reserved (None: none goes now).
SignedUp = tuple[Subscriber, datetime | None]

# Recorded with each consent; change it whenever the form's wording changes.
FORM_VERSION = "subscribe-form/1"

_CONFIRM_STATE = {
    SubscriberStatus.PENDING.value: "pending",  # GET shows a button; only its POST confirms
    SubscriberStatus.ACTIVE.value: "confirmed",
    SubscriberStatus.UNSUBSCRIBED.value: "ask",
    SubscriberStatus.BOUNCED.value: "blocked",
    SubscriberStatus.COMPLAINED.value: "blocked",
}


_DAY = 86400
_MAX_TOKEN = 200


class Signup:
    def __init__(self, ctx: WebContext, *, clock: Callable[[], float] = time.time) -> None:
        self.ctx = ctx
        self.clock = clock
        self.mailer = ConfirmationMailer(
            ctx.settings, ctx.pages, backend_factory=ctx.backend_factory, on_failed=self._release
        )
        self.limiter = SignupLimiter(Limits.from_settings(ctx.settings), clock=clock)

    def confirm_url(self, subscriber_id: int) -> str:
        """The timed confirmation link (a Links.confirm token would never expire)."""
        token = make_timed_token(
            self.ctx.key, Purpose.CONFIRM, subscriber_id, issued_at=int(self.clock())
        )
        return f"{self.ctx.links.site_url}/confirm/{token}"

    def _confirm_id(self, token: str) -> int | Literal["expired"] | None:
        """The subscriber of a live confirm token, "expired", or None for a bad one."""
        if len(token) > _MAX_TOKEN:
            return None
        max_age = self.ctx.settings.confirm_token_days * _DAY
        try:
            return read_timed_token(
                self.ctx.key, Purpose.CONFIRM, token, now=self.clock(), max_age=max_age
            )
        except ExpiredTokenError:
            return "expired"
        except BadTokenError:
            return None

    def _expired(self) -> Response:
        return self.ctx.pages.message(
            title="This confirmation link has expired",
            lines=[
                f"Confirmation links work for {self.ctx.settings.confirm_token_days} days.",
                "Fill in the form again and we will send a fresh one.",
            ],
            status=400,
            link=("/subscribe", "Back to the form"),
        )

    def _throttled(self, retry_after: int) -> Response:
        response = self.ctx.pages.message(
            title="Too many sign-ups",
            lines=["Please wait a while before you try again."],
            status=429,
            link=("/subscribe", "Back to the form"),
        )
        response.headers["Retry-After"] = str(retry_after)
        return response

    def routes(self) -> list[Route]:
        return [
            Route("/subscribe", self.form_page, methods=["GET"]),
            Route("/subscribe", self.form_post, methods=["POST"]),
            Route("/confirm/{token}", self.confirm_page, methods=["GET"]),
            Route("/confirm/{token}", self.confirm_post, methods=["POST"]),
        ]

    async def form_page(self, request: Request) -> Response:
        catalog = await self.ctx.db(catalog_categories)
        return self._form(offered(catalog, []), email="", error=None, status=200)

    def _form(
        self, choices: list[Choice], *, email: str, error: str | None, status: int
    ) -> Response:
        return self.ctx.pages.render(
            "subscribe.html",
            title="Subscribe",
            noindex=False,
            categories=choices,
            email=email,
            error=error,
            status=status,
        )

    async def form_post(self, request: Request) -> Response:
        form = await read_form(request)
        raw_email = form.get("email")
        email = raw_email if isinstance(raw_email, str) else ""
        submitted = [v for v in form.getlist("category") if isinstance(v, str)]
        ip = client_ip(request)
        retry_after = self.limiter.allow(ip=ip, address=email[:320])
        if retry_after is not None:
            return self._throttled(retry_after)

        def record(session: Session) -> tuple[SignedUp | None, str | None, list[Choice]]:
            choices = offered(catalog_categories(session), [])
            chosen = pick(choices, submitted)
            unknown = not_offered(choices, submitted)
            if unknown:
                return (
                    None,
                    not_offered_sentence(unknown),
                    offered([c.name for c in choices], chosen),
                )
            try:
                subscriber = request_subscription(
                    session=session,
                    email=email,
                    categories=chosen,
                    ip=ip,
                    form_version=FORM_VERSION,
                )
            except SubscriptionError as exc:
                return None, str(exc), offered([c.name for c in choices], chosen)
            assert subscriber.id is not None
            reserved = reserve_confirmation(session=session, subscriber_id=subscriber.id)
            return (subscriber, reserved), None, choices

        signed_up, error, choices = await self.ctx.db(record)
        if signed_up is None:
            return self._form(choices, email=email[:254], error=error, status=400)
        subscriber, reserved = signed_up
        if reserved is not None and subscriber.id is not None:
            self.mailer.submit(
                subscriber_id=subscriber.id,
                email=subscriber.email,
                confirm_url=self.confirm_url(subscriber.id),
                reserved_at=reserved,
            )
        return self._check_inbox()

    def _check_inbox(self) -> Response:
        return self.ctx.pages.message(
            title="Check your inbox",
            lines=[
                "If the address can receive the digest, a confirmation email is on its way. "
                "Open the link in it to start your subscription.",
                "Nothing arrived? Look in the spam folder, or fill in the form again.",
            ],
        )

    def _release(self, subscriber_id: int, reserved_at: datetime) -> None:
        """Called by the mailer when the email did not go: the form may send another at once."""
        with session_scope(self.ctx.engine) as session:
            release_confirmation(
                session=session, subscriber_id=subscriber_id, reserved_at=reserved_at
            )

    async def confirm_page(self, request: Request) -> Response:
        token = request.path_params["token"]
        subscriber_id = self._confirm_id(token)
        if subscriber_id == "expired":
            return self._expired()
        if subscriber_id is None:
            return self.ctx.pages.bad_link()
        subscriber = await self.ctx.db(lambda session: session.get(Subscriber, subscriber_id))
        if subscriber is None:
            return self.ctx.pages.bad_link()
        return self._confirm_view(request, token, subscriber)

    async def confirm_post(self, request: Request) -> Response:
        token = request.path_params["token"]
        subscriber_id = self._confirm_id(token)
        if subscriber_id == "expired":
            return self._expired()
        if subscriber_id is None:
            return self.ctx.pages.bad_link()
        form = await read_form(request)
        if not self.ctx.csrf_ok(request, form, token):
            return self.ctx.csrf_failed(request.url.path)
        ip = client_ip(request)

        def activate(session: Session) -> Subscriber | None:
            try:
                return confirm(session=session, subscriber_id=subscriber_id, ip=ip)
            except NotFoundError:
                return None

        subscriber = await self.ctx.db(activate)
        if subscriber is None:
            return self.ctx.pages.bad_link()
        return self._confirm_view(request, token, subscriber)

    def _confirm_view(self, request: Request, token: str, subscriber: Subscriber) -> Response:
        assert subscriber.id is not None
        state = _CONFIRM_STATE[subscriber.status]
        field, nonce = self.ctx.csrf_field(request, token)
        preferences_token = make_token(self.ctx.key, Purpose.PREFERENCES, subscriber.id)
        response = self.ctx.pages.render(
            "confirm.html",
            title={
                "confirmed": "You are subscribed",
                "pending": "Confirm your subscription",
                "ask": "Subscribe again?",
            }.get(state, "This address gets no digest"),
            state=state,
            masked_email=mask_email(subscriber.email),
            path=f"/confirm/{token}",
            preferences_path=f"/preferences/{preferences_token}",
            csrf=field,
        )
        if state in ("ask", "pending"):
            self.ctx.set_csrf_cookie(response, nonce)
        return response
