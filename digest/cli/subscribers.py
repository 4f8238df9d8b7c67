"""`digest subscribers`: the subscriber list, in and out as CSV."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from digest.cli.app import app, engine, load_settings, print_problems

subscribers_app = typer.Typer(help="The subscriber list.", no_args_is_help=True)
app.add_typer(subscribers_app, name="subscribers")


@subscribers_app.command("import")
def subscribers_import(
    file: Annotated[
        Path, typer.Argument(help="CSV: email,name,categories,subscribed_at,consent_source")
    ],
    skip_invalid: Annotated[
        bool, typer.Option("--skip-invalid", help="Import the valid rows, list the rest.")
    ] = False,
) -> None:
    """Upsert subscribers from a CSV file."""
    from digest.audience.csv_files import import_subscribers
    from digest.db import session_scope

    with session_scope(engine(load_settings())) as session:
        report = import_subscribers(session=session, path=file, skip_invalid=skip_invalid)
    typer.echo(
        f"Subscribers {file}: {report.created} created, {report.updated} updated, "
        f"{report.unchanged} unchanged, {report.kept_suppressed} kept suppressed, "
        f"{len(report.problems)} invalid left out."
    )
    print_problems(report.problems)
    print_problems(report.warnings, heading="Imported; {n} thing(s) to check:")


@subscribers_app.command("export")
def subscribers_export(
    out: Annotated[
        Path | None, typer.Option("--out", help="Write to FILE instead of stdout.")
    ] = None,
) -> None:
    """Every subscriber as CSV: the import columns plus status."""
    from sqlmodel import Session

    from digest.audience.csv_files import export_warnings, write_export

    with Session(engine(load_settings(), read_only=True)) as session:
        if out is None:
            write_export(session, sys.stdout)
        else:
            temporary = out.with_name(out.name + ".tmp")
            with temporary.open("w", newline="", encoding="utf-8") as stream:
                count = write_export(session, stream)
            temporary.replace(out)
            typer.echo(f"Wrote {count} subscribers to {out}.", err=True)
        for warning in export_warnings(session):
            typer.echo(f"warning: {warning}", err=True)
