"""One send measurement in a fresh process; prints one JSON line (see bench_send.py).

Seeds a real list's shape (tests/support/list_shape.py: 64 variants) of the given size, runs the
weekly flow under Prefect's ephemeral API against the fake SendGrid named by the environment,
and reports the flow's own timings of its planning and send phases and the process's peak RSS.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy.engine import Engine  # noqa: E402

from digest.config import get_settings  # noqa: E402
from digest.db import ensure_schema  # noqa: E402
from tests.support.list_shape import WEEK, seed_list  # noqa: E402


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_sample_bodies(engine: Engine, path: Path, *, count: int = 40) -> None:
    """The project's own request bodies for the ceiling's bare client: the run's first rows, a
    thousand a request, built and serialised exactly as the send builds them."""
    from sqlalchemy import select

    from digest.delivery import ledger
    from digest.delivery.building import recipient_for
    from digest.links import Links
    from digest.models import DELIVERY_TABLE as DELIVERY
    from digest.send.base import OutgoingBatch, ProviderBatch
    from digest.send.sendgrid_request import request_body

    settings = get_settings()
    links = Links.from_settings(settings)
    with engine.connect() as connection:
        rows = connection.execute(
            select(
                DELIVERY.c.id,
                DELIVERY.c.subscriber_id,
                DELIVERY.c.email,
                DELIVERY.c.name,
                DELIVERY.c.variant_id,
                DELIVERY.c.digest_id,
                DELIVERY.c.provider_batch_id,
                DELIVERY.c.send_at,
            )
            .order_by(DELIVERY.c.id)
            .limit(count * settings.batch_size)
        ).all()
        variant = ledger.variant_row(connection, variant_id=rows[0].variant_id)
    with path.open("wb") as out:
        for start in range(0, len(rows), settings.batch_size):
            chunk = rows[start : start + settings.batch_size]
            held = ProviderBatch(chunk[0].provider_batch_id, chunk[0].send_at, chunk[0].send_at)
            batch = OutgoingBatch(
                digest_id=chunk[0].digest_id,
                week=WEEK,
                subject=variant["subject"],
                html=variant["html"],
                text=variant["text"],
                recipients=[
                    recipient_for(
                        links, ledger.ClaimedRecipient(r.id, r.subscriber_id, r.email, r.name)
                    )
                    for r in chunk
                ],
                from_email=settings.from_email,
                from_name=settings.from_name,
                provider_batch=held,
            )
            out.write(request_body(batch) + b"\n")


def main() -> None:
    size = int(sys.argv[1])
    engine = ensure_schema(get_settings().database_url)
    clock = time.perf_counter()
    seed_list(engine, Path.cwd(), size)
    seeded = time.perf_counter() - clock

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
    write_sample_bodies(engine, Path(sys.argv[2]))
    print(
        json.dumps(
            {
                "seed_seconds": seeded,
                "startup_seconds": startup,
                "flow_seconds": total,
                "plan_seconds": summary.plan_seconds,
                "send_seconds": summary.send_seconds,
                "emails_per_second": sent / summary.send_seconds,
                "requests": summary.batches,
                "batch_ids": summary.batch_ids,
                "lost_answers": summary.lost_answers,
                "peak_mb": peak_mb(),
            }
        )
    )


if __name__ == "__main__":
    main()
