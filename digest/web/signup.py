"""Sign-up with double opt-in: the form, the confirmation email, the confirm link.

Whatever happened to the address (new, pending, active, unsubscribed, bounced), the form answers
the same "check your inbox" page, so it tells nobody who is on the list. The confirm link
activates a pending sign-up on GET, as people expect of a link; bringing back someone who had
unsubscribed takes a button press (POST), so an old link fetched by a mail scanner cannot.
The sign-up form itself takes no CSRF value, so the main site can embed it: the emailed link is
what proves that the address wants the digest.
"""

from __future__ import annotations

import logging

from sqlmodel import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from digest.audience.categories import catalog_categories
from digest.audience.lifecycle import (
    SubscriptionError,
    confirm,
    confirmation_due,
    record_confirmation_sent,
    request_subscription,
)
from digest.delivery.states import SubscriberStatus
from digest.errors import NotFoundError, SendAuthError
from digest.models import Subscriber
from digest.send.base import PermanentSendError, TransientSendError
from digest.tokens import Purpose, make_token
from digest.web.categories import Choice, offered, pick
from digest.web.confirmation import send_confirmation
from digest.web.context import WebContext, client_ip, mask_email, read_form

log = logging.getLogger(__name__)

# Recorded with each consent; change it whenever the form's wording changes.
FORM_VERSION = "subscribe-form/1"

_CONFIRM_STATE = {
    SubscriberStatus.PENDING.value: "confirmed",  # only after confirm() ran, see confirm_page
    SubscriberStatus.ACTIVE.value: "confirmed",
    SubscriberStatus.UNSUBSCRIBED.value: "ask",
    SubscriberStatus.BOUNCED.value: "blocked",
    SubscriberStatus.COMPLAINED.value: "blocked",
}


class Signup:
    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx

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

        def record(session: Session) -> tuple[Subscriber | None, str | None, list[Choice]]:
            choices = offered(catalog_categories(session), [])
            chosen = pick(choices, submitted)
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
            return subscriber, None, choices

        subscriber, error, choices = await self.ctx.db(record)
        if subscriber is None:
            return self._form(choices, email=email[:254], error=error, status=400)
        if confirmation_due(subscriber):
            assert subscriber.id is not None
            subscriber_id = subscriber.id
            try:
                await run_in_threadpool(
                    send_confirmation,
                    self.ctx.settings,
                    self.ctx.pages,
                    backend_factory=self.ctx.backend_factory,
                    email=subscriber.email,
                    confirm_url=self.ctx.links.confirm(subscriber.id),
                )
            except (TransientSendError, PermanentSendError, SendAuthError, OSError) as exc:
                log.error(
                    "confirmation email to subscriber %s not sent: %s",
                    subscriber.id,
                    type(exc).__name__,
                )
                return self.ctx.pages.message(
                    title="We could not send the confirmation email",
                    lines=["Nothing is lost: please try again in a few minutes."],
                    status=503,
                    link=("/subscribe", "Back to the form"),
                )
            await self.ctx.db(
                lambda session: record_confirmation_sent(
                    session=session, subscriber_id=subscriber_id
                )
            )
        return self.ctx.pages.message(
            title="Check your inbox",
            lines=[
                "If the address can receive the digest, a confirmation email is on its way. "
                "Open the link in it to start your subscription.",
                "Nothing arrived? Look in the spam folder, or fill in the form again.",
            ],
        )

    async def confirm_page(self, request: Request) -> Response:
        token = request.path_params["token"]
        subscriber_id = self.ctx.subscriber_id(Purpose.CONFIRM, token)
        if subscriber_id is None:
            return self.ctx.pages.bad_link()
        ip = client_ip(request)

        def activate_pending(session: Session) -> Subscriber | None:
            subscriber = session.get(Subscriber, subscriber_id)
            if subscriber is not None and subscriber.status == SubscriberStatus.PENDING.value:
                subscriber = confirm(session=session, subscriber_id=subscriber_id, ip=ip)
            return subscriber

        subscriber = await self.ctx.db(activate_pending)
        if subscriber is None:
            return self.ctx.pages.bad_link()
        return self._confirm_view(request, token, subscriber)

    async def confirm_post(self, request: Request) -> Response:
        token = request.path_params["token"]
        subscriber_id = self.ctx.subscriber_id(Purpose.CONFIRM, token)
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
            title={"confirmed": "You are subscribed", "ask": "Subscribe again?"}.get(
                state, "This address gets no digest"
            ),
            state=state,
            masked_email=mask_email(subscriber.email),
            path=f"/confirm/{token}",
            preferences_path=f"/preferences/{preferences_token}",
            csrf=field,
        )
        if state == "ask":
            self.ctx.set_csrf_cookie(response, nonce)
        return response
