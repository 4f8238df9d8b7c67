"""`digest votes`: readers' ship/skip votes per tool, for one week's email or overall."""

from __future__ import annotations

import csv
import json
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from digest.cli.app import app, engine, load_settings

if TYPE_CHECKING:
    from digest.engagement.votes import Tally

FORMATS = ("table", "json", "csv")


@app.command("votes")
def votes(
    week: Annotated[
        str | None,
        typer.Option("--week", help="ISO week such as 2026-W47: votes from that week's email."),
    ] = None,
    output_format: Annotated[str, typer.Option("--format", help="table, json or csv.")] = "table",
) -> None:
    """Readers' ship/skip votes per tool: from week W's email, or overall without --week."""
    from digest.errors import ConfigError
    from digest.weeks import IsoWeek

    if output_format not in FORMATS:
        raise ConfigError(
            f"--format {output_format!r} is not known. Use --format table, json or csv."
        )
    the_week = str(IsoWeek.parse(week)) if week is not None else None
    tallies = _tallies(the_week)
    if output_format == "json":
        document = {"week": the_week, "tools": [tally.as_dict() for tally in tallies]}
        typer.echo(json.dumps(document, indent=2))
    elif output_format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["slug", "ship", "skip", "voters"])
        writer.writerows([t.slug, t.ship, t.skip, t.voters] for t in tallies)
    else:
        _print_table(the_week, tallies)


def _tallies(week: str | None) -> list[Tally]:
    """The week's tallies (every tool of its email), or every tool's running tally."""
    from digest.engagement import votes as ballots
    from digest.errors import NotFoundError

    with engine(load_settings(), read_only=True).connect() as connection:
        if week is None:
            return ballots.overall_tallies(connection)
        found = ballots.sent_digest(connection, week=week)
        if found is None:
            raise NotFoundError(
                f"No digest was sent for {week}, so its email has no votes. Pick a sent week "
                "(`digest status --week W` shows one), or leave --week out for every vote."
            )
        digest_id, content = found
        slugs = ballots.content_slugs(content)
        return ballots.week_tallies(connection, digest_id=digest_id, slugs=slugs)


def _print_table(week: str | None, tallies: list[Tally]) -> None:
    heading = f"Votes from the email of {week}" if week else "Votes from every email"
    total = sum(t.voters for t in tallies)
    typer.echo(f"{heading}: {total} vote{'' if total == 1 else 's'} on {len(tallies)} tools")
    if not tallies:
        return
    width = max(len("tool"), *(len(t.slug) for t in tallies))
    typer.echo(f"  {'tool':<{width}}  {'ship':>5}  {'skip':>5}  {'voters':>6}  ship share")
    for t in tallies:
        share = f"{t.ship_share * 100:.0f}%" if t.ship_share is not None else "no votes yet"
        typer.echo(f"  {t.slug:<{width}}  {t.ship:>5}  {t.skip:>5}  {t.voters:>6}  {share}")
