"""Counting the email's clicks on our own pages: a comparison page or the archive opened with
`?r=<the delivery's vote token>`, as every sent email's links to them carry it.

Those links are kept out of the provider's click tracking (templates/partials/links.mjml.j2),
so this is where their clicks are seen. A wrapper around the app, not a route: the pages stay as
they are, and a visit is kept only once its page answered 200 (a comparison that does not exist
counts nothing), only for a link of the token's own email (`in_email`), and only for an email
that may have gone out. Keeping it never holds the page back, and a failure to keep it never
fails the page: it is logged.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qs

from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from digest.engagement import votes as ballots
from digest.engagement.engine import reader_engine
from digest.engagement.visits import LinkKind, in_email, record_visit
from digest.tokens import Purpose
from digest.web.context import WebContext
from digest.weeks import utcnow

log = logging.getLogger(__name__)

# Path prefix -> what a visit there is a click on; the rest of the path is its target.
COUNTED_PAGES = (("/compare/", LinkKind.COMPARISON), ("/archive/", LinkKind.ARCHIVE))
READER_PARAMETER = "r"


def counted_link(path: str) -> tuple[LinkKind, str] | None:
    """(kind, target) of a page whose visits count: its pair or week; None for any other."""
    for prefix, kind in COUNTED_PAGES:
        target = path.removeprefix(prefix)
        if target != path and target and "/" not in target:
            return kind, target
    return None


class VisitCounter:
    """ASGI middleware keeping the reader's first visit of a counted page."""

    def __init__(self, app: ASGIApp, *, ctx: WebContext) -> None:
        self.app = app
        self.ctx = ctx
        self.engine = reader_engine(ctx.settings.database_url)
        self.email_tools = ballots.EmailToolsCache()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        counted = self._visit(scope)
        if counted is None:
            await self.app(scope, receive, send)
            return
        statuses: list[int] = []

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                statuses.append(int(message["status"]))
            await send(message)

        await self.app(scope, receive, watch)
        if statuses == [200]:
            await run_in_threadpool(self._keep, *counted)

    def _visit(self, scope: Scope) -> tuple[int, LinkKind, str] | None:
        """(delivery id, kind, target) when the request is a reader's GET of a counted page."""
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            return None
        link = counted_link(scope["path"])
        if link is None:
            return None
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        tokens = query.get(READER_PARAMETER) or []
        delivery_id = self.ctx.subscriber_id(Purpose.VOTE, tokens[0]) if tokens else None
        return None if delivery_id is None else (delivery_id, *link)

    def _keep(self, delivery_id: int, kind: LinkKind, target: str) -> None:
        try:
            with self.engine.begin() as connection:
                ballot = ballots.find_ballot(connection, delivery_id=delivery_id)
                if ballot is None:  # never sent (skipped, say), or its week was recalled
                    return
                # Only a comparison needs the email's tools; an archive visit names its week.
                comparison = kind is LinkKind.COMPARISON
                tools = self.email_tools.tools(connection, ballot) if comparison else {}
                if in_email(kind, target, ballot, tools):
                    record_visit(
                        connection, delivery_id=delivery_id, kind=kind, target=target, now=utcnow()
                    )
        except SQLAlchemyError as exc:
            log.warning("a %s visit was not counted: %s", kind.value, type(exc).__name__)
