"""`digest status`: delivery counts by state for a week."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from digest.cli.app import WeekOption, app, engine, load_settings
from digest.errors import ConfigError


@app.command("status")
def status(
    week: WeekOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Delivery counts by state for a week."""
    from digest.db import missing_sqlite_file, shown_url
    from digest.delivery.ledger import digest_status
    from digest.weeks import resolve_week, utcnow

    settings = load_settings()
    the_week = resolve_week(week, now=utcnow(), zone=settings.zone)
    database = shown_url(settings.database_url)
    missing = missing_sqlite_file(settings.database_url)
    if missing is not None:
        # Reading must not create an empty database that then says "nothing sent".
        raise ConfigError(
            f"There is no database at {missing.resolve()} ({database}), so there is nothing "
            "to report. Set DIGEST_DATABASE_URL to the database the runs use (the worker's or "
            "`digest serve`'s), or run this command from the folder that holds it."
        )
    with engine(settings).connect() as connection:
        total, counts = digest_status(connection, week=str(the_week))
    if as_json:
        typer.echo(json.dumps({"week": str(the_week), "total": total, "counts": counts}))
        return
    if not total:
        typer.echo(f"{the_week}: no deliveries recorded in {database}.")
        return
    typer.echo(f"{the_week}: {total} deliveries in {database}")
    for state, n in sorted(counts.items()):
        typer.echo(f"  {state:<12} {n}")
