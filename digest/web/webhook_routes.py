"""`POST /webhooks/sendgrid`: verify, normalize, apply, answer.

Verification comes first and costs one ECDSA check; a rejected request touches no database. A
verified batch (up to SendGrid's few thousand events) is applied in one transaction.
"""

from __future__ import annotations

import logging
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from digest.delivery.events import apply_events
from digest.web.context import WebContext
from digest.webhooks.sendgrid import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SendGridWebhook,
    WebhookPayloadError,
    WebhookRejected,
)

log = logging.getLogger(__name__)

# SendGrid posts batches of events; a few MB is far above any real one.
WEBHOOK_MAX_BODY = 5 * 1024 * 1024


class Webhooks:
    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx

    def routes(self) -> list[Route]:
        return [
            Route(
                "/webhooks/sendgrid",
                self.sendgrid,
                methods=["POST"],
                max_body_size=WEBHOOK_MAX_BODY,
            )
        ]

    async def sendgrid(self, request: Request) -> Response:
        verifier = self.ctx.webhook
        if verifier is None:
            log.warning(
                "SendGrid webhook refused: DIGEST_SENDGRID_WEBHOOK_PUBLIC_KEY is not set, "
                "so no request can be verified"
            )
            return PlainTextResponse("Forbidden\n", status_code=403)
        body = await request.body()
        try:
            verifier.verify(
                body,
                request.headers.get(SIGNATURE_HEADER),
                request.headers.get(TIMESTAMP_HEADER),
                now=time.time(),
            )
        except WebhookRejected as exc:
            log.warning("SendGrid webhook refused: %s", exc)
            return PlainTextResponse("Forbidden\n", status_code=403)
        try:
            parsed = SendGridWebhook.parse_batch(body)
        except WebhookPayloadError as exc:
            log.warning("SendGrid webhook payload refused: %s", exc)
            return PlainTextResponse("Bad Request\n", status_code=400)
        summary = await self.ctx.db(lambda s: apply_events(session=s, events=parsed.events))
        return JSONResponse({**summary.as_dict(), "skipped": parsed.skipped})
