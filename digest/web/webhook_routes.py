"""`POST /webhooks/<provider>`: verify, normalize, apply, answer; one route per provider of
`digest/providers.py` that reports events, each served by that provider's adapter.

Verification comes first and costs one signature check; a rejected request touches no database.
A verified batch (a provider's few thousand events) is applied in one transaction.
"""

from __future__ import annotations

import logging
import time
from functools import partial

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from digest.delivery.events import apply_events
from digest.web.context import WebContext
from digest.webhooks.base import EventWebhook, WebhookPayloadError, WebhookRejected

log = logging.getLogger(__name__)


class Webhooks:
    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx

    def routes(self) -> list[Route]:
        return [
            Route(
                f"/webhooks/{name}",
                partial(self.receive, name),
                methods=["POST"],
                max_body_size=adapter_class.max_body_bytes,
            )
            for name, (adapter_class, _adapter) in self.ctx.webhooks.items()
        ]

    async def receive(self, name: str, request: Request) -> Response:
        adapter_class, adapter = self.ctx.webhooks[name]
        if adapter is None:
            log.warning("%s webhook refused: %s", adapter_class.title, adapter_class.unconfigured)
            return PlainTextResponse("Forbidden\n", status_code=403)
        body = await request.body()
        try:
            adapter.verify(body, request.headers, now=time.time())
        except WebhookRejected as exc:
            log.warning("%s webhook refused: %s", adapter_class.title, exc)
            return PlainTextResponse("Forbidden\n", status_code=403)
        try:
            parsed = adapter.parse(body)
        except WebhookPayloadError as exc:
            log.warning("%s webhook payload refused: %s", adapter_class.title, exc)
            return PlainTextResponse("Bad Request\n", status_code=400)
        summary = await self.ctx.db(lambda s: apply_events(session=s, events=parsed.events))
        return JSONResponse({**summary.as_dict(), "skipped": parsed.skipped})


def unconfigured(webhooks: dict[str, tuple[type[EventWebhook], EventWebhook | None]]) -> list[str]:
    """A start-up warning for each webhook that will refuse every request."""
    return [
        f"{adapter_class.unconfigured}: /webhooks/{name} will refuse every request until it is"
        for name, (adapter_class, adapter) in webhooks.items()
        if adapter is None
    ]
