"""A sent week that readers answered: SendGrid's signed events through the real webhook, and
readers' clicks and votes on `digest web`'s own pages, for the report tests to count."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from starlette.testclient import TestClient

from digest.config import Settings
from digest.db import get_engine
from digest.models import DELIVERY_TABLE
from tests.support.sent_week import SentWeek
from tests.support.voting import path_of, press
from tests.support.webhook_events import Signer, event

# The funnel `answer_week` makes of the scenario's week (six recipients).
EXPECTED = {
    "sent": 6,
    "delivered": 5,  # everyone but reader4, whose address bounced
    "opened": 2,  # reader0 and reader2; reader1's only open was Apple's proxy
    "machine_opened": 1,
    "clicked": 2,  # reader0 (a tool's site, the comparison, a vote) and reader2 (the archive)
    "unsubscribed": 1,  # writer, by the one-click link of our own page
    "complained": 1,  # reader3
    "bounced": 1,  # reader4
    "votes": 1,
}


@dataclass(frozen=True)
class Answered:
    week: SentWeek
    deliveries: dict[str, int]  # recipient address -> delivery id
    pair: tuple[str, str]  # the head-to-head reader0 clicked through


def delivery_ids(settings: Settings, digest_id: int) -> dict[str, int]:
    with get_engine(settings.database_url).connect() as connection:
        rows = connection.execute(
            select(DELIVERY_TABLE.c.email, DELIVERY_TABLE.c.id).where(
                DELIVERY_TABLE.c.digest_id == digest_id
            )
        )
        return {str(email): int(did) for email, did in rows}


def post_events(client: TestClient, signer: Signer, events: list[dict[str, Any]]) -> None:
    body = json.dumps(events).encode()
    answer = client.post("/webhooks/sendgrid", content=body, headers=signer.headers(body))
    assert answer.status_code == 200, answer.text


def answer_week(client: TestClient, signer: Signer, settings: Settings, week: SentWeek) -> Answered:
    """Readers answer the week as EXPECTED says, through the webhook and our own pages."""
    ids = delivery_ids(settings, week.digest_id)
    reader0 = "reader0@example.com"
    compare = next(
        link for link in week.links(reader0) if "/compare/" in link and "code-llama-4" in link
    )
    archive = next(link for link in week.links("reader2@example.com") if "/archive/" in link)
    tool_site = "https://example.com/code-llama-4"
    assert tool_site in week.links(reader0)

    def said(name: str, address: str, **extra: object) -> dict[str, object]:
        # The event names the reader's own address, as SendGrid's do: the webhook checks it.
        return event(name, ids[address], email=address, **extra)

    events = [said("delivered", a) for a in ids if a != "reader4@example.com"]
    events += [
        said("open", reader0, sg_machine_open=False),
        said("open", reader0, sg_machine_open=False),
        said("click", reader0, url=tool_site),
        # SendGrid saw the comparison click too (tracking on for it): still one click.
        said("click", reader0, url=compare),
        said("open", "reader1@example.com", sg_machine_open=True),
        said("open", "reader2@example.com", sg_machine_open=True),
        said("open", "reader2@example.com", sg_machine_open=False),
        said("spamreport", "reader3@example.com"),
        said("bounce", "reader4@example.com", type="bounce", reason="550 no such user"),
    ]
    post_events(client, signer, events)
    for link in (compare, compare, archive):
        assert client.get(path_of(link)).status_code == 200
    assert press(client, week.vote_link(reader0, "code-llama-4", "ship"))[0] == 200
    unsubscribe = next(link for link in week.links("writer@example.com") if "/unsubscribe/" in link)
    one_click = client.post(path_of(unsubscribe), data={"List-Unsubscribe": "One-Click"})
    assert one_click.status_code == 200
    a, _, b = urlsplit(compare).path.removeprefix("/compare/").partition("-vs-")
    return Answered(week=week, deliveries=ids, pair=(a, b))
