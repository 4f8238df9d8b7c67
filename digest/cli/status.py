"""`digest status`: delivery counts by state for a week."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from digest.cli.app import WeekOption, app, engine, load_settings


@app.command("status")
def status(
    week: WeekOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Delivery counts by state for a week, whether the editor recalled it, and whether a run
    waits for its approval."""
    from digest.db import shown_url
    from digest.delivery.ledger import digest_status, is_recalled
    from digest.run.approval import waiting_run
    from digest.weeks import resolve_week, utcnow

    settings = load_settings()
    now = utcnow()
    the_week = resolve_week(week, now=now, zone=settings.zone)
    database = shown_url(settings.database_url)
    reader = engine(settings, read_only=True)
    with reader.connect() as connection:
        total, counts = digest_status(connection, week=str(the_week))
        recalled = is_recalled(connection, week=str(the_week))
    if as_json:
        # Exactly the documented keys: scripts compare the whole object.
        shown = {"week": str(the_week), "total": total, "counts": counts, "recalled": recalled}
        typer.echo(json.dumps(shown))
        return
    held = (
        f" Recalled: no run sends it until `digest run --week {the_week} --after-recall`."
        if recalled
        else ""
    )
    waiting = waiting_run(
        reader, week=str(the_week), now=now, timeout_minutes=settings.approval_timeout_minutes
    )
    if waiting is not None and not waiting.ended:
        held += (
            f" A run has waited for approval since {waiting.since:%Y-%m-%d %H:%M} UTC:"
            f" `digest approve --week {the_week}` (or the Prefect UI) answers it."
        )
    if not total:
        typer.echo(f"{the_week}: no deliveries recorded in {database}.{held}")
        return
    typer.echo(f"{the_week}: {total} deliveries in {database}.{held}")
    for state, n in sorted(counts.items()):
        typer.echo(f"  {state:<12} {n}")
