"""`digest recall`: cancel what can still be cancelled of a week's digest, and hold the week."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from digest.cli.app import app, engine, load_settings

if TYPE_CHECKING:
    from digest.run.recall import RecallResult


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
        canceller = canceller_for(settings, engine=database, backend=backend)
        result = recall_week(
            database, week=the_week, canceller=canceller, lease_seconds=settings.lease_seconds
        )
    print_recall(the_week, result, deadline=canceller.deadline_seconds if canceller else 0)


def print_recall(week: str, result: RecallResult, *, deadline: int) -> None:
    """What the recall did, in the editor's words; exit 1 when the provider could not be asked."""
    back = "" if result.released else " (back to pending)"
    if result.unreachable is not None:
        typer.echo(
            f"Recall of {week} is not finished: {result.stopped} deliveries stopped{back}, but "
            f"{result.on_their_way} could not be stopped yet: {result.unreachable}",
            err=True,
        )
        typer.echo(
            f"  Fix that and run `digest recall --week {week}` again at once: the provider takes a "
            f"cancel until {deadline} s before a batch's send time. The week stays recalled.",
            err=True,
        )
        raise typer.Exit(1)
    typer.echo(
        f"Recalled {week}: {result.stopped} deliveries stopped{back}, "
        f"{result.on_their_way} already on their way."
    )
    for problem in result.problems:
        typer.echo(f"  Not stopped: {problem}")
    if result.released:
        typer.echo("  Nothing had gone out: the frozen content was released, so edits apply.")
    typer.echo(f"  No run sends {week} again until `digest run --week {week} --after-recall`.")
