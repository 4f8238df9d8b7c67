"""The pages behind every email's personal links: unsubscribe (RFC 8058) and preferences.

A GET never changes anything (link scanners prefetch GETs). A POST to the unsubscribe URL
unsubscribes at once, whoever sends it: with the body `List-Unsubscribe=One-Click` it is the
mailbox provider's one-click request and gets a bare 200; from the page's own button it gets the
page again. Anything that brings mail back (re-subscribe, saved preferences) needs the CSRF field.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sqlmodel import Session
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from digest.audience.categories import catalog_categories
from digest.audience.lifecycle import resubscribe, set_categories, unsubscribe
from digest.errors import NotFoundError
from digest.models import Subscriber
from digest.states import SubscriberStatus
from digest.tokens import Purpose, make_token
from digest.web.categories import not_offered, not_offered_sentence, offered, pick
from digest.web.context import WebContext, mask_email, read_form

# The page shown for each subscriber status.
_UNSUBSCRIBE_STATE = {
    SubscriberStatus.PENDING.value: "ask",
    SubscriberStatus.ACTIVE.value: "ask",
    SubscriberStatus.UNSUBSCRIBED.value: "done",
    SubscriberStatus.BOUNCED.value: "blocked",
    SubscriberStatus.COMPLAINED.value: "blocked",
}


class SubscriberPages:
    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx

    def routes(self) -> list[Route]:
        return [
            Route("/unsubscribe", self.without_token, methods=["GET"]),
            Route("/preferences", self.without_token, methods=["GET"]),
            Route("/unsubscribe/{token}", self.unsubscribe_page, methods=["GET"]),
            Route("/unsubscribe/{token}", self.unsubscribe_post, methods=["POST"]),
            Route("/preferences/{token}", self.preferences_page, methods=["GET"]),
            Route("/preferences/{token}", self.preferences_post, methods=["POST"]),
        ]

    async def without_token(self, request: Request) -> Response:
        # The archive's blanked links lead here: every real link is personal.
        return self.ctx.pages.message(
            title="Use the link in your email",
            lines=[
                "Every digest ends with links to unsubscribe and to choose your categories. "
                "They are personal to you, so open them from the email itself."
            ],
        )

    # --- unsubscribe -----------------------------------------------------------------------------

    async def unsubscribe_page(self, request: Request) -> Response:
        token = request.path_params["token"]
        subscriber_id = self.ctx.subscriber_id(Purpose.UNSUBSCRIBE, token)
        if subscriber_id is None:
            return self.ctx.pages.bad_link()
        subscriber = await self.ctx.db(lambda s: s.get(Subscriber, subscriber_id))
        if subscriber is None:
            return self.ctx.pages.bad_link()
        return self._unsubscribe_view(
            request, token, subscriber, _UNSUBSCRIBE_STATE[subscriber.status]
        )

    async def unsubscribe_post(self, request: Request) -> Response:
        token = request.path_params["token"]
        subscriber_id = self.ctx.subscriber_id(Purpose.UNSUBSCRIBE, token)
        if subscriber_id is None:
            return self.ctx.pages.bad_link()
        try:
            form = await read_form(request)
        except HTTPException as exc:
            if exc.status_code != 400:
                raise
            # A POST here means "unsubscribe" even when a sender garbles the form encoding.
            form = FormData()
        if form.get("action") == "resubscribe":
            if not self.ctx.csrf_ok(request, form, token):
                return self.ctx.csrf_failed(request.url.path)
            subscriber = await self.ctx.db(
                lambda s: _or_none(resubscribe, s, subscriber_id, "unsubscribe page")
            )
            if subscriber is None:
                return self.ctx.pages.bad_link()
            back = subscriber.status == SubscriberStatus.ACTIVE.value
            state = "resubscribed" if back else _UNSUBSCRIBE_STATE[subscriber.status]
            return self._unsubscribe_view(request, token, subscriber, state)

        one_click = form.get("List-Unsubscribe") == "One-Click"
        source = "one-click" if one_click else "unsubscribe page"
        subscriber = await self.ctx.db(lambda s: _or_none(unsubscribe, s, subscriber_id, source))
        if subscriber is None:
            return self.ctx.pages.bad_link()
        if one_click:
            return PlainTextResponse("You are unsubscribed.\n")
        return self._unsubscribe_view(
            request, token, subscriber, _UNSUBSCRIBE_STATE[subscriber.status]
        )

    def _unsubscribe_view(
        self, request: Request, token: str, subscriber: Subscriber, state: str
    ) -> Response:
        assert subscriber.id is not None
        field, nonce = self.ctx.csrf_field(request, token)
        titles = {
            "ask": "Unsubscribe",
            "done": "You are unsubscribed",
            "resubscribed": "You are subscribed again",
            "blocked": "This address gets no digest",
        }
        response = self.ctx.pages.render(
            "unsubscribe.html",
            title=titles[state],
            state=state,
            subscriber_status=subscriber.status,
            masked_email=mask_email(subscriber.email),
            path=f"/unsubscribe/{token}",
            preferences_path=self._path("preferences", Purpose.PREFERENCES, subscriber.id),
            csrf=field,
        )
        if state == "done":
            self.ctx.set_csrf_cookie(response, nonce)
        return response

    def _path(self, prefix: str, purpose: Purpose, subscriber_id: int) -> str:
        return f"/{prefix}/{make_token(self.ctx.key, purpose, subscriber_id)}"

    # --- preferences -----------------------------------------------------------------------------

    async def preferences_page(self, request: Request) -> Response:
        token = request.path_params["token"]
        subscriber_id = self.ctx.subscriber_id(Purpose.PREFERENCES, token)
        if subscriber_id is None:
            return self.ctx.pages.bad_link()

        def load(session: Session) -> tuple[Subscriber, list[str]] | None:
            subscriber = session.get(Subscriber, subscriber_id)
            return None if subscriber is None else (subscriber, catalog_categories(session))

        found = await self.ctx.db(load)
        if found is None:
            return self.ctx.pages.bad_link()
        subscriber, catalog = found
        return self._preferences_view(request, token, subscriber, catalog, saved=False)

    async def preferences_post(self, request: Request) -> Response:
        token = request.path_params["token"]
        subscriber_id = self.ctx.subscriber_id(Purpose.PREFERENCES, token)
        if subscriber_id is None:
            return self.ctx.pages.bad_link()
        form = await read_form(request)
        if not self.ctx.csrf_ok(request, form, token):
            return self.ctx.csrf_failed(request.url.path)
        submitted = [v for v in form.getlist("category") if isinstance(v, str)]

        def save(session: Session) -> tuple[Subscriber, list[str], list[str]] | None:
            """The subscriber, the catalog's categories, and the submitted names nobody
            offered: with any of those, nothing is saved (dropping them could turn a reader's
            one category into every category)."""
            subscriber = session.get(Subscriber, subscriber_id)
            if subscriber is None:
                return None
            catalog = catalog_categories(session)
            choices = offered(catalog, subscriber.categories)
            unknown = not_offered(choices, submitted)
            if not unknown:
                subscriber = set_categories(
                    session=session,
                    subscriber_id=subscriber_id,
                    categories=pick(choices, submitted),
                )
            return subscriber, catalog, unknown

        found = await self.ctx.db(save)
        if found is None:
            return self.ctx.pages.bad_link()
        subscriber, catalog, unknown = found
        return self._preferences_view(
            request, token, subscriber, catalog, saved=not unknown, unknown=unknown
        )

    def _preferences_view(
        self,
        request: Request,
        token: str,
        subscriber: Subscriber,
        catalog: list[str],
        *,
        saved: bool,
        unknown: Sequence[str] = (),
    ) -> Response:
        assert subscriber.id is not None
        field, nonce = self.ctx.csrf_field(request, token)
        chosen = list(subscriber.categories)
        response = self.ctx.pages.render(
            "preferences.html",
            title="Preferences",
            status=400 if unknown else 200,
            saved=saved,
            not_saved=not_offered_sentence(unknown) if unknown else None,
            summary=", ".join(chosen) if chosen else "every category",
            subscriber_status=subscriber.status,
            masked_email=mask_email(subscriber.email),
            categories=offered(catalog, chosen),
            path=f"/preferences/{token}",
            unsubscribe_path=self._path("unsubscribe", Purpose.UNSUBSCRIBE, subscriber.id),
            csrf=field,
        )
        self.ctx.set_csrf_cookie(response, nonce)
        return response


class _Change(Protocol):
    def __call__(self, *, session: Session, subscriber_id: int, source: str) -> Subscriber: ...


def _or_none(
    change: _Change, session: Session, subscriber_id: int, source: str
) -> Subscriber | None:
    """Apply `unsubscribe` or `resubscribe`; None when the subscriber no longer exists."""
    try:
        return change(session=session, subscriber_id=subscriber_id, source=source)
    except NotFoundError:
        return None
