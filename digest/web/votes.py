"""The pages behind the email's Ship and Skip links: /vote/<token>/<slug>?choice=ship|skip.

`GET` never counts a vote: mail scanners open every link of some workplaces' mail, and a vote
counted on a click would let them vote both ways. It shows the tool, the vote so far and one
form; the form's `POST` (CSRF-protected like every form here) counts one vote per subscriber and
tool, a later one replacing it, and answers with the tool's running tally. The token names one
delivery: it votes only on the tools of that email (digest/engagement/votes.py). Opening the
link counts as the reader's click on it (digest/engagement/visits.py). Links of the archive and
of previews carry no token and open a page that says they cannot vote.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.engine import Connection
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from digest.engagement import votes as ballots
from digest.engagement.engine import reader_engine
from digest.engagement.visits import LinkKind, record_visit
from digest.links import LinkTemplates
from digest.render.placeholders import ARCHIVE_VOTE_TOKEN, UNPERSONAL_VOTE_TOKENS
from digest.tokens import Purpose
from digest.web.context import WebContext, read_form
from digest.weeks import utcnow

log = logging.getLogger(__name__)
T = TypeVar("T")

# Catalog slugs; anything else is no tool of ours and is not looked up.
_SLUG = re.compile(r"[a-z0-9-]{1,200}")


@dataclass(frozen=True)
class Found:
    """A vote link that names a tool of its email: whose email, which tool, their vote so far."""

    ballot: ballots.Ballot
    tool: ballots.EmailTool
    current: ballots.Choice | None


def _choice(value: Any) -> ballots.Choice | None:
    try:
        return ballots.Choice(value) if isinstance(value, str) else None
    except ValueError:
        return None


class VotePages:
    """GET and POST /vote/<token>/<slug>."""

    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx
        self.engine = reader_engine(ctx.settings.database_url)
        self.templates = LinkTemplates.from_settings(ctx.settings)
        self._email_tools = ballots.EmailToolsCache()

    def routes(self) -> list[Route]:
        return [
            Route("/vote/{token}/{slug}", self.page, methods=["GET"]),
            Route("/vote/{token}/{slug}", self.cast, methods=["POST"]),
        ]

    # --- the two requests ------------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        token, slug = request.path_params["token"], request.path_params["slug"]
        if token in UNPERSONAL_VOTE_TOKENS:
            return await self._copy_page(token, slug)
        delivery_id = self.ctx.subscriber_id(Purpose.VOTE, token)
        if delivery_id is None:
            return self.ctx.pages.bad_link()
        found = await self._db(lambda c: self._opened(c, delivery_id, slug))
        if found is None:
            return self._not_in_email()
        return self._ask(request, token, slug, found, _choice(request.query_params.get("choice")))

    async def cast(self, request: Request) -> Response:
        token, slug = request.path_params["token"], request.path_params["slug"]
        if token in UNPERSONAL_VOTE_TOKENS:
            return self._cannot_vote()
        delivery_id = self.ctx.subscriber_id(Purpose.VOTE, token)
        if delivery_id is None:
            return self.ctx.pages.bad_link()
        form = await read_form(request)
        if not self.ctx.csrf_ok(request, form, _scope(token)):
            return self.ctx.csrf_failed(request.url.path)
        choice = _choice(form.get("choice"))
        if choice is None:
            return self._no_choice(request.url.path)
        counted = await self._db(lambda c: self._counted(c, delivery_id, slug, choice))
        if counted is None:
            return self._not_in_email()
        return self._thanks(token, slug, *counted, choice)

    # --- database work (each request one short transaction) ------------------------------------

    async def _db(self, work: Callable[[Connection], T]) -> T:
        """`work` in one transaction on a worker thread, through the engine votes are written
        with; a bare connection, no ORM session: in a burst every request's cost counts."""

        def run() -> T:
            with self.engine.begin() as connection:
                return work(connection)

        return await run_in_threadpool(run)

    def _find(self, connection: Connection, delivery_id: int, slug: str) -> Found | None:
        """The link's email and tool, if the tool was in that email."""
        if not _SLUG.fullmatch(slug):
            return None
        ballot = ballots.find_ballot(connection, delivery_id=delivery_id)
        if ballot is None:
            return None
        tool = self._email_tools.tools(connection, ballot).get(slug)
        if tool is None:
            return None
        current = ballots.current_choice(connection, subscriber_id=ballot.subscriber_id, slug=slug)
        return Found(ballot, tool, current)

    def _opened(self, connection: Connection, delivery_id: int, slug: str) -> Found | None:
        """`_find`, and the reader's click on the link kept (its first time only)."""
        found = self._find(connection, delivery_id, slug)
        if found is not None:
            record_visit(
                connection,
                delivery_id=delivery_id,
                kind=LinkKind.VOTE,
                target=slug,
                now=utcnow(),
            )
        return found

    def _counted(
        self, connection: Connection, delivery_id: int, slug: str, choice: ballots.Choice
    ) -> tuple[Found, ballots.Tally] | None:
        """The vote stored, and the tool's running tally with it."""
        found = self._find(connection, delivery_id, slug)
        if found is None:
            return None
        ballots.cast_vote(connection, ballot=found.ballot, slug=slug, choice=choice, now=utcnow())
        log.info("vote counted: delivery %s, %s %s", delivery_id, choice.value, slug)
        return found, ballots.tool_tally(connection, slug=slug)

    # --- pages -----------------------------------------------------------------------------------

    def _compare_href(self, tool: ballots.EmailTool) -> str | None:
        pair = tool.pair
        if pair is None:
            return None
        return self.templates.compare_url(pair.a.slug, pair.b.slug) or pair.compare_path

    def _ask(
        self,
        request: Request,
        token: str,
        slug: str,
        found: Found,
        choice: ballots.Choice | None,
    ) -> Response:
        field, nonce = self.ctx.csrf_field(request, _scope(token))
        response = self.ctx.pages.render(
            "vote.html",
            title=f"Ship or skip {found.tool.card.name}?",
            state="ask",
            week=found.ballot.week,
            tool=found.tool.card,
            pair=found.tool.pair,
            compare_href=self._compare_href(found.tool),
            current=found.current.value if found.current else None,
            choice=choice.value if choice else None,
            path=f"/vote/{token}/{slug}",
            csrf=field,
        )
        self.ctx.set_csrf_cookie(response, nonce)
        return response

    def _thanks(
        self,
        token: str,
        slug: str,
        found: Found,
        tally: ballots.Tally,
        choice: ballots.Choice,
    ) -> Response:
        other = ballots.Choice.SKIP if choice is ballots.Choice.SHIP else ballots.Choice.SHIP
        return self.ctx.pages.render(
            "vote.html",
            title=f"You voted {choice.value} on {found.tool.card.name}",
            state="counted",
            week=found.ballot.week,
            tool=found.tool.card,
            pair=found.tool.pair,
            compare_href=self._compare_href(found.tool),
            choice=choice.value,
            other=other.value,
            change_href=f"/vote/{token}/{slug}?choice={other.value}",
            tally=tally,
        )

    async def _copy_page(self, token: str, slug: str) -> Response:
        """A Ship/Skip link of the archive or a preview: the running tally, and no vote."""
        if not _SLUG.fullmatch(slug):
            return self._not_in_email()

        def load(connection: Connection) -> tuple[str, ballots.Tally] | None:
            name = ballots.tool_name(connection, slug=slug)
            if name is None:
                return None
            return name, ballots.tool_tally(connection, slug=slug)

        found = await self._db(load)
        if found is None:
            return self._not_in_email()
        return self.ctx.pages.render(
            "vote.html",
            title="Votes come from subscribers' own emails",
            state="copy",
            source="archive" if token == ARCHIVE_VOTE_TOKEN else "preview",
            tool_name=found[0],
            tally=found[1],
        )

    def _cannot_vote(self) -> Response:
        return self.ctx.pages.message(
            title="This copy cannot vote",
            lines=[
                "Links in the archive and in previews are not anyone's own, so they count no "
                "vote. Subscribers vote from the links in their own email."
            ],
            status=403,
            link=("/subscribe", "Subscribe to the weekly digest"),
        )

    def _not_in_email(self) -> Response:
        return self.ctx.pages.message(
            title="No such tool in this email",
            lines=[
                "This vote link does not name a tool of the email it came from. Open the Ship "
                "or Skip link again from that email, or copy the whole address."
            ],
            status=404,
        )

    def _no_choice(self, path: str) -> Response:
        return self.ctx.pages.message(
            title="Choose ship or skip",
            lines=["The form did not say which vote to count, so nothing was counted."],
            status=400,
            link=(path, "Back to the vote"),
        )


def _scope(token: str) -> str:
    """What a vote form's CSRF value is bound to: the email's own token."""
    return f"vote/{token}"
