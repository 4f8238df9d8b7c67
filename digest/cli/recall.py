"""`digest recall`: cancel what can still be cancelled of a week's digest, and hold the week."""

from __future__ import annotations

from typing import Annotated

import typer

from digest.cli.app import app, engine, load_settings


@app.command("recall")
def recall(
    week: Annotated[str, typer.Option("--week", help="ISO week such as 2026-W47.")],
) -> None:
    """Cancel every scheduled batch of week W that can still be cancelled, and hold the week."""
    from digest.delivery.cancelling import canceller_for
    from digest.run.recall import recall as recall_week
    from digest.send import get_backend
    from digest.weeks import IsoWeek

    the_week = str(IsoWeek.parse(week))
    settings = load_settings()
    database = engine(settings)
    with get_backend(settings) as backend:
        result = recall_week(
            database,
            week=the_week,
            canceller=canceller_for(settings, engine=database, backend=backend),
            lease_seconds=settings.lease_seconds,
        )
    typer.echo(
        f"Recalled {the_week}: {result.stopped} deliveries stopped (back to pending), "
        f"{result.on_their_way} already on their way."
    )
    for problem in result.problems:
        typer.echo(f"  not stopped: {problem}", err=True)
    if result.released:
        typer.echo("  Nothing had gone out: the frozen content was released, so edits apply.")
    typer.echo(
        f"  No run sends {the_week} again until `digest run --week {the_week} --after-recall`."
    )
