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
    """Delivery counts by state for a week, and whether the editor recalled it."""
    from digest.db import shown_url
    from digest.delivery.ledger import digest_status, is_recalled
    from digest.weeks import resolve_week, utcnow

    settings = load_settings()
    the_week = resolve_week(week, now=utcnow(), zone=settings.zone)
    database = shown_url(settings.database_url)
    with engine(settings, read_only=True).connect() as connection:
        total, counts = digest_status(connection, week=str(the_week))
        recalled = is_recalled(connection, week=str(the_week))
    if as_json:
        shown = {"week": str(the_week), "total": total, "counts": counts, "recalled": recalled}
        typer.echo(json.dumps(shown))
        return
    held = (
        f" Recalled: no run sends it until `digest run --week {the_week} --after-recall`."
        if recalled
        else ""
    )
    if not total:
        typer.echo(f"{the_week}: no deliveries recorded in {database}.{held}")
        return
    typer.echo(f"{the_week}: {total} deliveries in {database}.{held}")
    for state, n in sorted(counts.items()):
        typer.echo(f"  {state:<12} {n}")
