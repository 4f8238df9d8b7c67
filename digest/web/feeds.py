"""GET /feeds/votes.json: every tool's running ship/skip tallies, for the site's community column.

Only for the site: without DIGEST_VOTES_FEED_TOKEN the feed does not exist (404), and without
`Authorization: Bearer <that token>` it answers 401; the token is compared in constant time.
The document is computed at most once per `ttl` seconds and shared by every request meanwhile;
its weak ETag names the tallies, so a poller that sends If-None-Match gets 304 until a vote
changes them.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from digest.engagement.votes import overall_tallies
from digest.web.context import WebContext
from digest.weeks import utcnow

FEED_PATH = "/feeds/votes.json"
TTL_SECONDS = 30.0


@dataclass(frozen=True)
class FeedDocument:
    body: bytes
    etag: str
    expires: float


def _etag_matches(header: str | None, etag: str) -> bool:
    """If-None-Match holds our ETag (compared weakly, as RFC 9110 asks for GET) or `*`."""
    if not header:
        return False
    ours = etag.removeprefix("W/")
    wanted = (part.strip() for part in header.split(","))
    return any(part == "*" or part.removeprefix("W/") == ours for part in wanted)


class VoteFeed:
    def __init__(
        self,
        ctx: WebContext,
        *,
        ttl: float = TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ctx = ctx
        self.ttl = ttl
        self.clock = clock
        secret = ctx.settings.votes_feed_token
        token = secret.get_secret_value().strip() if secret is not None else ""
        self._token = token.encode() if token else None
        self._document: FeedDocument | None = None
        self._building = asyncio.Lock()

    def routes(self) -> list[Route]:
        return [Route(FEED_PATH, self.feed, methods=["GET"])]

    async def feed(self, request: Request) -> Response:
        if self._token is None:
            raise HTTPException(404)
        if not self._authorized(request.headers.get("authorization")):
            return JSONResponse(
                {"error": "a bearer token is required: Authorization: Bearer <token>"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="votes"', "Cache-Control": "no-store"},
            )
        document = await self._current()
        headers = {"ETag": document.etag, "Cache-Control": f"private, max-age={int(self.ttl)}"}
        if _etag_matches(request.headers.get("if-none-match"), document.etag):
            return Response(status_code=304, headers=headers)
        return Response(document.body, media_type="application/json", headers=headers)

    def _authorized(self, header: str | None) -> bool:
        scheme, _, given = (header or "").strip().partition(" ")
        if scheme.casefold() != "bearer" or self._token is None:
            return False
        return hmac.compare_digest(given.strip().encode(), self._token)

    async def _current(self) -> FeedDocument:
        """The shared document, computed again once it is older than `ttl`."""
        document = self._document
        if document is not None and self.clock() < document.expires:
            return document
        async with self._building:
            document = self._document
            if document is None or self.clock() >= document.expires:
                document = await self._build()
                self._document = document
        return document

    async def _build(self) -> FeedDocument:
        tallies = await self.ctx.db(lambda s: overall_tallies(s.connection()))
        tools = [{"slug": t.slug, "ship": t.ship, "skip": t.skip} for t in tallies]
        counted = json.dumps(tools, separators=(",", ":")).encode()
        etag = 'W/"' + hashlib.sha256(counted).hexdigest()[:32] + '"'
        body = json.dumps({"generated_at": utcnow().isoformat(), "tools": tools}).encode()
        return FeedDocument(body=body, etag=etag, expires=self.clock() + self.ttl)
