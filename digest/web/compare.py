"""The head-to-head pages the emails' "Read the full comparison" buttons open: /compare/<a>-vs-<b>.

A page exists for every pair of a sent (planned) digest and is drawn from that digest's frozen
content, so it says what the email said. Slugs may hold hyphens, even "-vs-", so the address is
matched whole against each digest's pairs, never split.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlmodel import Session, col
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from digest.content.frozen import PairCard
from digest.http_urls import is_http_url
from digest.models import Digest
from digest.web.context import WebContext

# Two slugs of [a-z0-9-] and the "-vs-" between them; anything else is no page of ours.
_PAIR_PATH = re.compile(r"[a-z0-9-]{1,300}-vs-[a-z0-9-]{1,300}")
_INDEX_LIMIT = 1040


@dataclass(frozen=True)
class FoundPair:
    """A pair as a sent digest froze it, and the week it went out."""

    week: str
    week_label: str
    pair: PairCard


def pair_paths(content: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each pair of a frozen content document, by its "<a>-vs-<b>" address (the first wins)."""
    found: dict[str, dict[str, Any]] = {}
    pairs = content.get("pairs")
    for raw in pairs if isinstance(pairs, list) else []:
        try:
            path = f"{raw['a']['slug']}-vs-{raw['b']['slug']}"
        except (KeyError, TypeError):
            continue
        found.setdefault(path, raw)
    return found


class ComparePages:
    """GET /compare/<a>-vs-<b>, with an in-memory index of the pairs of every sent digest."""

    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx
        # digest id -> (week, week label, pairs by address); frozen content never changes.
        self._index: dict[int, tuple[str, str, dict[str, dict[str, Any]]]] = {}

    def routes(self) -> list[Route]:
        return [Route("/compare/{pair}", self.page, methods=["GET"])]

    async def page(self, request: Request) -> Response:
        asked = request.path_params["pair"]
        if not isinstance(asked, str) or not _PAIR_PATH.fullmatch(asked):
            return self._not_found()
        found = await self.ctx.db(lambda session: self._find(session, asked))
        if found is None:
            return self._not_found()
        pair = found.pair
        return self.ctx.pages.render(
            "compare.html",
            title=f"{pair.a.name} vs {pair.b.name}",
            noindex=False,
            wide=True,
            found=found,
            pair=pair,
            sides=[pair.a, pair.b],
            tool_href=lambda tool: tool.url if tool.url and is_http_url(tool.url) else "",
            headers={"Cache-Control": "public, max-age=300"},
        )

    def _find(self, session: Session, asked: str) -> FoundPair | None:
        """The pair at `asked` in the latest sent digest that holds it."""
        rows = session.connection().execute(
            select(col(Digest.id))
            .where(col(Digest.planned_at).is_not(None))
            .order_by(col(Digest.week).desc())
            .limit(_INDEX_LIMIT)
        )
        for (digest_id,) in rows.all():
            week, label, paths = self._indexed(session, int(digest_id or 0))
            raw = paths.get(asked)
            if raw is not None:
                return FoundPair(week=week, week_label=label, pair=PairCard.model_validate(raw))
        return None

    def _indexed(
        self, session: Session, digest_id: int
    ) -> tuple[str, str, dict[str, dict[str, Any]]]:
        cached = self._index.get(digest_id)
        if cached is not None:
            return cached
        week, content = (
            session.connection()
            .execute(
                select(col(Digest.week), col(Digest.content)).where(col(Digest.id) == digest_id)
            )
            .one()
        )
        document = content if isinstance(content, dict) else {}
        entry = (str(week), str(document.get("week_label") or week), pair_paths(document))
        if len(self._index) >= _INDEX_LIMIT:
            self._index.clear()
        self._index[digest_id] = entry
        return entry

    def _not_found(self) -> Response:
        return self.ctx.pages.message(
            title="No comparison at this address",
            lines=["No sent digest compared these two tools."],
            status=404,
            link=("/archive", "See every past digest"),
        )
