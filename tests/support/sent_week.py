"""A week's digest sent for real, without Prefect: composed, planned, and sent by a sender lane
through the recording backend, so a test holds the very messages subscribers got."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from digest.catalog.importer import import_catalog
from digest.config import Settings
from digest.db import ensure_schema, session_scope
from digest.delivery import sending
from digest.delivery.ledger import new_owner
from digest.run import bookkeeping, preparation
from digest.send.memory import MemoryBackend
from digest.weeks import IsoWeek
from tests.support.factories import tool_dict, write_catalog
from tests.support.scenario import WEEK, seed
from tests.support.senders import send_of

_HREF = re.compile(r'href="([^"]+)"')
_TEXT_URL = re.compile(r"https?://[^\s<>\"]+")
NEXT_WEEK = "2026-W48"


@dataclass
class SentWeek:
    week: str
    digest_id: int
    messages: dict[str, EmailMessage] = field(default_factory=dict)  # by recipient address

    def html(self, address: str) -> str:
        part = self.messages[address].get_body(("html",))
        assert part is not None
        return str(part.get_content())

    def text(self, address: str) -> str:
        part = self.messages[address].get_body(("plain",))
        assert part is not None
        return str(part.get_content())

    def links(self, address: str) -> set[str]:
        """Every link of the message: each href of its HTML, each URL of its text."""
        found = {link.replace("&amp;", "&") for link in _HREF.findall(self.html(address))}
        return found | set(_TEXT_URL.findall(self.text(address)))

    def vote_link(self, address: str, slug: str, choice: str = "ship") -> str:
        """The subscriber's own Ship (or Skip) link for `slug`, from their HTML."""
        wanted = [
            link
            for link in self.links(address)
            if "/vote/" in link and link.endswith(f"/{slug}?choice={choice}")
        ]
        assert len(wanted) == 1, (slug, wanted)
        return wanted[0]


def next_week_tools() -> list[dict[str, Any]]:
    """Two new developer tools of the week after WEEK."""
    return [
        tool_dict("gitgenie", name="GitGenie", added_at="2026-11-24T10:00:00Z"),
        tool_dict("buildbuddy", name="BuildBuddy", added_at="2026-11-25T10:00:00Z"),
    ]


def send_week(
    settings: Settings,
    folder: Path,
    *,
    week: str = WEEK,
    subscribers: int = 6,
    tools: list[dict[str, Any]] | None = None,
) -> SentWeek:
    """Send `week` to everyone planned: the scenario's catalog and people first (WEEK), or
    `tools` added to the catalog (a later week)."""
    engine = ensure_schema(settings.database_url)
    if tools is None:
        seed(settings, folder, subscribers=subscribers)
    else:
        with session_scope(engine) as session:
            import_catalog(session=session, path=write_catalog(folder / f"{week}.json", tools))
    edition = preparation.Edition.from_settings(settings)
    prepared = preparation.prepare_digest(engine, edition, IsoWeek.parse(week), freeze=True)
    assert prepared.digest_id is not None
    preparation.plan(engine, edition, prepared)
    owner = new_owner()
    bookkeeping.begin_run(
        engine,
        digest_id=prepared.digest_id,
        owner=owner,
        lease_seconds=settings.lease_seconds,
        resend_uncertain=False,
    )
    plan = sending.send_plan(engine, digest_id=prepared.digest_id, week=week, owner=owner)
    backend = MemoryBackend()
    send_of(settings, plan, backend=backend)
    bookkeeping.end_run(engine, digest_id=prepared.digest_id, owner=owner)
    sent = SentWeek(week=week, digest_id=prepared.digest_id)
    for message in backend.sent:
        sent.messages[str(message["To"].addresses[0].addr_spec)] = message
    return sent
