"""Rows for the web app's tests, straight into the database: subscribers, tools, frozen digests
and their deliveries, and a subscriber's row read back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from digest.models import Delivery, Digest, DigestVariant, Subscriber, Tool


def now() -> datetime:
    return datetime.now(UTC)


def make_subscriber(
    engine: Engine,
    email: str = "ada@example.com",
    *,
    status: str = "active",
    categories: list[str] | None = None,
) -> int:
    with engine.begin() as connection:
        return int(
            connection.execute(
                insert(Subscriber)
                .values(
                    email=email,
                    email_key=email.casefold(),
                    categories=categories or [],
                    status=status,
                    created_at=now(),
                )
                .returning(Subscriber.id)  # type: ignore[arg-type]
            ).scalar_one()
        )


def make_tool(engine: Engine, slug: str, category: str) -> None:
    with engine.begin() as connection:
        connection.execute(
            insert(Tool).values(
                slug=slug,
                name=slug.title(),
                category=category,
                tagline="A tool",
                tags=[],
                added_at=now(),
                content_hash="0" * 64,
                imported_at=now(),
            )
        )


def make_digest(
    engine: Engine,
    week: str = "2026-W47",
    *,
    html: str | None = None,
    planned: bool = True,
    content: dict[str, Any] | None = None,
) -> int:
    """A frozen digest; with `html`, its every-category variant as sent."""
    with engine.begin() as connection:
        digest_id = int(
            connection.execute(
                insert(Digest)
                .values(
                    week=week,
                    subject=f"Verdicts of {week}",
                    content=content or {"week": week},
                    created_at=now(),
                    planned_at=now() if planned else None,
                )
                .returning(Digest.id)  # type: ignore[arg-type]
            ).scalar_one()
        )
        if html is not None:
            connection.execute(
                insert(DigestVariant).values(
                    digest_id=digest_id, key="", subject="s", html=html, text="t"
                )
            )
    return digest_id


def make_delivery(engine: Engine, digest_id: int, subscriber_id: int, state: str = "sent") -> int:
    with engine.begin() as connection:
        return int(
            connection.execute(
                insert(Delivery)
                .values(
                    digest_id=digest_id,
                    subscriber_id=subscriber_id,
                    state=state,
                    attempts=1,
                    updated_at=now(),
                )
                .returning(Delivery.id)  # type: ignore[arg-type]
            ).scalar_one()
        )


def subscriber_row(engine: Engine, subscriber_id: int) -> dict[str, Any]:
    with engine.begin() as connection:
        row = connection.execute(
            select(Subscriber.__table__).where(Subscriber.__table__.c.id == subscriber_id)  # type: ignore[attr-defined]
        ).mappings()
        return dict(row.one())


def status_of(engine: Engine, subscriber_id: int) -> str:
    return str(subscriber_row(engine, subscriber_id)["status"])
