"""The ASGI application served by `digest web`: `create_app(settings)` assembles it.

Routes live in small modules by audience (subscriber links, sign-up, archive, webhook); this
module adds what every response shares: security headers, body size limits, error pages. There
are no redirects anywhere (not even for trailing slashes), so there is no open redirect.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Lifespan

from digest.config import Settings
from digest.send import get_backend
from digest.web.archive import Archive
from digest.web.compare import ComparePages
from digest.web.context import BackendFactory, WebContext
from digest.web.feeds import VoteFeed
from digest.web.proxies import ForwardedClientMiddleware
from digest.web.security import SecurityHeadersMiddleware, page_policy
from digest.web.signup import Signup
from digest.web.subscriber_pages import SubscriberPages
from digest.web.visits import VisitCounter
from digest.web.votes import VotePages
from digest.web.webhook_routes import Webhooks, unconfigured

log = logging.getLogger(__name__)

# Forms here are a few hundred bytes; the webhook route raises its own limit.
MAX_BODY = 1024 * 1024

_TITLES = {
    400: "Bad request",
    404: "Page not found",
    405: "Method not allowed",
    413: "Request too large",
}


class DigestWebApp(Starlette):
    """Starlette with the security headers outside everything, error pages included."""

    def __init__(
        self, ctx: WebContext, routes: list[BaseRoute], *, lifespan: Lifespan[Any] | None = None
    ) -> None:
        self.context = ctx
        super().__init__(
            routes=routes,
            lifespan=lifespan,
            exception_handlers={
                HTTPException: self._http_error,
                ClientDisconnect: self._client_gone,
                Exception: self._server_error,
            },
            max_body_size=MAX_BODY,
        )
        # A redirect built from the request's own URL is one less thing to get wrong.
        self.router.redirect_slashes = False

    def build_middleware_stack(self) -> ASGIApp:
        secured = SecurityHeadersMiddleware(
            super().build_middleware_stack(),
            content_security_policy=page_policy(self.context.pages.css),
            https=self.context.secure_cookies,
        )
        return ForwardedClientMiddleware(secured, self.context.settings.trusted_proxy_networks)

    async def _client_gone(self, request: Request, exc: Exception) -> Response:
        # A client that left mid-request is no error of ours, and nobody reads this answer; the
        # server logs the one line about it (digest/web/server.py).
        log.debug(
            "client left before its request was complete: %s %s", request.method, request.url.path
        )
        return Response(status_code=400)

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        title = _TITLES.get(exc.status_code, "Request refused")
        response = self.context.pages.message(
            title=title,
            lines=["The address or the request is not one this site answers."],
            status=exc.status_code,
            link=("/", "Go to the home page"),
        )
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    async def _server_error(self, request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return self.context.pages.message(
            title="Something went wrong",
            lines=["Nothing was changed. Please try again in a few minutes."],
            status=500,
        )


def create_app(settings: Settings, *, backend_factory: BackendFactory = get_backend) -> Starlette:
    """The web app for `settings`; raises `DigestError` at once on a bad setting or database.

    Confirmation emails go through `backend_factory(settings, interactive=True)`: by default the
    configured backend, or the one a caller hands in (tests pass a recording backend).
    """
    ctx = WebContext.build(settings, backend_factory=backend_factory)
    signup = Signup(ctx)
    routes: list[BaseRoute] = [
        *Archive(ctx).routes(),
        *ComparePages(ctx).routes(),
        *SubscriberPages(ctx).routes(),
        *signup.routes(),
        *Webhooks(ctx).routes(),
        *VotePages(ctx).routes(),
        *VoteFeed(ctx).routes(),
    ]
    for warning in unconfigured(ctx.webhooks):
        log.warning("%s", warning)
    web_app = DigestWebApp(ctx, routes, lifespan=signup.mailer.lifespan)
    web_app.add_middleware(VisitCounter, ctx=ctx)
    web_app.state.confirmation_mailer = signup.mailer  # tests wait on it: mail goes off-request
    return web_app
