"""Builders for ledger tests: subscribers and a frozen digest, straight into the database; and
the count of a digest's rows by state."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Engine

from digest.config import Settings
from digest.db import get_engine
from digest.delivery import ledger
from digest.models import Subscriber
from digest.render.variant import RenderedVariant


def make_subscribers(
    engine: Engine,
    count: int,
    *,
    categories: list[str] | None = None,
    status: str = "active",
    start: int = 0,
) -> None:
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = [
        {
            "email": f"reader{start + i}@example.com",
            "email_key": f"reader{start + i}@example.com",
            "name": f"Reader {start + i}",
            "categories": categories or [],
            "status": status,
            "created_at": now,
        }
        for i in range(count)
    ]
    with engine.begin() as connection:
        for offset in range(0, len(rows), 5000):
            connection.execute(insert(Subscriber), rows[offset : offset + 5000])


def make_digest(engine: Engine, week: str = "2026-W47") -> int:
    with engine.begin() as connection:
        row = ledger.freeze_digest(
            connection, week=week, subject="Subject", content={"week": week, "pairs": []}
        )
    return int(row["id"])


def render_everything(categories: list[str]) -> RenderedVariant | None:
    """A variant renderer: every category set gets a body, except the 'robotics'-only one."""
    if categories == ["robotics"]:
        return None
    label = ";".join(categories) or "all"
    return RenderedVariant(
        subject=f"Digest for {label}",
        html=f"<p>{label} %%unsubscribe_url%%</p>",
        text=f"{label} %%unsubscribe_url%%",
    )


def state_counts_of(settings: Settings, digest_id: int) -> dict[str, int]:
    with get_engine(settings.database_url).connect() as connection:
        return ledger.state_counts(connection, digest_id=digest_id)
