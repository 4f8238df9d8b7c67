"""One benchmark measurement in a fresh process; prints one JSON line (see bench_send.py)."""

from __future__ import annotations

import json
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402

from digest.catalog.importer import import_catalog  # noqa: E402
from digest.config import get_settings  # noqa: E402
from digest.db import ensure_schema, session_scope  # noqa: E402
from digest.models import Subscriber  # noqa: E402
from tests.support.factories import write_catalog  # noqa: E402
from tests.support.scenario import WEEK, week_tools  # noqa: E402


def seed(size: int) -> None:
    settings = get_settings()
    engine = ensure_schema(settings.database_url)
    with session_scope(engine) as session:
        import_catalog(session=session, path=write_catalog(Path("catalog.json"), week_tools()))
    now = datetime.now(UTC)
    with engine.begin() as connection:
        for start in range(0, size, 10000):
            connection.execute(
                insert(Subscriber),
                [
                    {
                        "email": f"reader{i}@example.com",
                        "email_key": f"reader{i}@example.com",
                        "name": f"Reader {i}",
                        # One in ten reads only Writing: two content variants, as in real lists.
                        "categories": ["Writing"] if i % 10 == 0 else [],
                        "status": "active",
                        "created_at": now,
                    }
                    for i in range(start, min(size, start + 10000))
                ],
            )


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_flow(size: int) -> dict[str, float]:
    from prefect import flow

    from flows.weekly_digest import weekly_digest

    @flow
    def warm_up() -> None:
        return None

    clock = time.perf_counter()
    warm_up()
    startup = time.perf_counter() - clock
    clock = time.perf_counter()
    summary = weekly_digest(week=WEEK)
    total = time.perf_counter() - clock
    sent = summary.counts.get("sent", 0)
    assert sent == size, summary.counts
    return {
        "emails_per_second": sent / summary.send_seconds,
        "send_seconds": summary.send_seconds,
        "flow_seconds": total,
        "startup_seconds": startup,
        "peak_mb": peak_mb(),
    }


def run_naive(size: int) -> dict[str, float]:
    """One render, one request and one ORM commit per subscriber: what the ledger replaces."""
    from sqlmodel import Session, select

    from digest.db import get_engine
    from digest.delivery.ledger import ClaimedRecipient
    from digest.delivery.sending import recipient_for
    from digest.links import Links
    from digest.models import Delivery, Digest
    from digest.run.preparation import Edition, compute_content, render_for_categories
    from digest.send import get_backend
    from digest.send.base import OutgoingBatch
    from digest.weeks import IsoWeek

    settings = get_settings()
    engine = get_engine(settings.database_url)
    edition = Edition.from_settings(settings)
    content = compute_content(engine, edition, IsoWeek.parse(WEEK))
    links = Links.from_settings(settings)
    clock = time.perf_counter()
    with Session(engine) as session:
        digest = Digest(
            week=WEEK, subject=content.subject, content={}, created_at=datetime.now(UTC)
        )
        session.add(digest)
        session.commit()
        people = session.exec(select(Subscriber)).all()
        with get_backend(settings) as backend:
            for person in people:
                bodies = render_for_categories(edition, content, list(person.categories))
                assert bodies is not None and person.id is not None and digest.id is not None
                recipient = recipient_for(
                    links,
                    ClaimedRecipient(
                        delivery_id=person.id,
                        subscriber_id=person.id,
                        email=person.email,
                        name=person.name,
                    ),
                )
                batch = OutgoingBatch(
                    digest_id=digest.id,
                    week=WEEK,
                    subject=bodies.subject,
                    html=bodies.html,
                    text=bodies.text,
                    recipients=[recipient],
                    from_email=settings.from_email,
                    from_name=settings.from_name,
                )
                backend.send_batch(batch)
                session.add(
                    Delivery(
                        digest_id=digest.id,
                        subscriber_id=person.id,
                        state="sent",
                        updated_at=datetime.now(UTC),
                    )
                )
                session.commit()
    elapsed = time.perf_counter() - clock
    return {
        "emails_per_second": size / elapsed,
        "send_seconds": elapsed,
        "flow_seconds": elapsed,
        "startup_seconds": 0.0,
        "peak_mb": peak_mb(),
    }


def main() -> None:
    mode, size = sys.argv[1], int(sys.argv[2])
    seed(size)
    result = run_flow(size) if mode == "flow" else run_naive(size)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
