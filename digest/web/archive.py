"""The public pages: the archive of sent digests (the emails' "view in browser"), the home page
and the health check.

An archived digest is its every-category variant as it was sent, with the per-subscriber tokens
blanked. When no subscriber received that variant (everyone chose categories), it is rendered
once from the digest's frozen content and kept in memory.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from digest.content.frozen import DigestContent
from digest.errors import WeekError
from digest.links import LinkTemplates
from digest.models import Digest, DigestVariant
from digest.render.placeholders import neutral_substitutions
from digest.render.variant import render_variant
from digest.send.base import substitute
from digest.web.context import WebContext
from digest.web.security import ARCHIVE_POLICY
from digest.weeks import IsoWeek

log = logging.getLogger(__name__)

# Ten years of weekly digests: the whole list fits one page.
_LIST_LIMIT = 520
_RENDER_CACHE_LIMIT = 32


class Archive:
    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx
        self._rendered: dict[int, str] = {}

    def routes(self) -> list[Route]:
        return [
            Route("/", self.home, methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/favicon.ico", self.favicon, methods=["GET"]),
            Route("/archive", self.index, methods=["GET"]),
            Route("/archive/{week}", self.week, methods=["GET"]),
            # POST too: a test copy's List-Unsubscribe header points here for one-click clients.
            Route("/preview-link", self.preview_link, methods=["GET", "POST"]),
        ]

    async def home(self, request: Request) -> Response:
        return self.ctx.pages.render("home.html", title="Home", noindex=False)

    async def preview_link(self, request: Request) -> Response:
        return self.ctx.pages.message(
            title="This link came from a preview",
            lines=[
                "An editor's preview or test copy of the digest links here instead of to a "
                "subscriber's own page, so nothing was changed.",
                "In the email subscribers receive, this link opens their own page.",
            ],
            link=("/archive", "See every sent digest"),
        )

    async def favicon(self, request: Request) -> Response:
        # Browsers ask for it on every site; an empty answer keeps 404s out of the logs.
        return Response(status_code=204, headers={"Cache-Control": "public, max-age=86400"})

    async def healthz(self, request: Request) -> Response:
        try:
            await self.ctx.db(lambda s: s.connection().execute(text("SELECT 1")).scalar_one())
        except SQLAlchemyError as exc:
            log.error("health check: database unreachable (%s)", type(exc).__name__)
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    async def index(self, request: Request) -> Response:
        def load(session: Session) -> list[dict[str, str]]:
            rows = session.connection().execute(
                select(col(Digest.week), col(Digest.subject))
                .where(col(Digest.planned_at).is_not(None))
                .order_by(col(Digest.week).desc())
                .limit(_LIST_LIMIT)
            )
            return [{"week": w, "subject": s} for w, s in rows]

        digests = await self.ctx.db(load)
        return self.ctx.pages.render(
            "archive_index.html", title="Archive", noindex=False, digests=digests
        )

    async def week(self, request: Request) -> Response:
        asked = request.path_params["week"]
        try:
            week = str(IsoWeek.parse(asked))
        except WeekError:
            return self._not_found()
        if week != asked:
            return self._not_found()

        def load(session: Session) -> tuple[int, str | None, dict[str, Any]] | None:
            digest = (
                session.connection()
                .execute(
                    select(col(Digest.id), col(Digest.content)).where(
                        col(Digest.week) == week, col(Digest.planned_at).is_not(None)
                    )
                )
                .first()
            )
            if digest is None:
                return None
            html = (
                session.connection()
                .execute(
                    select(col(DigestVariant.html)).where(
                        col(DigestVariant.digest_id) == digest[0], col(DigestVariant.key) == ""
                    )
                )
                .scalar_one_or_none()
            )
            return int(digest[0]), html, digest[1]

        found = await self.ctx.db(load)
        if found is None:
            return self._not_found()
        digest_id, html, content = found
        if html is None:
            html = self._render_full(digest_id, content)
        body = substitute(html, neutral_substitutions(self.ctx.settings.site_url))
        return HTMLResponse(
            body,
            headers={
                "Content-Security-Policy": ARCHIVE_POLICY,
                # A sent digest never changes: the same page for everyone, cacheable.
                "Cache-Control": "public, max-age=300",
            },
        )

    def _render_full(self, digest_id: int, content: dict[str, Any]) -> str:
        cached = self._rendered.get(digest_id)
        if cached is not None:
            return cached
        html = render_variant(
            DigestContent.model_validate(content),
            site_url=self.ctx.settings.site_url,
            postal_address=self.ctx.settings.postal_address,
            link_templates=LinkTemplates.from_settings(self.ctx.settings),
        ).html
        if len(self._rendered) >= _RENDER_CACHE_LIMIT:
            self._rendered.clear()
        self._rendered[digest_id] = html
        return html

    def _not_found(self) -> Response:
        return self.ctx.pages.message(
            title="No digest for that week",
            lines=["There is no sent digest at this address."],
            status=404,
            link=("/archive", "See every past digest"),
        )
