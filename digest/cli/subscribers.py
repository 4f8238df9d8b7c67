"""`digest subscribers`: the subscriber list, in and out as CSV."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TextIO, cast

import typer

from digest.cli.app import app, engine, load_settings, print_problems
from digest.errors import OutputFileError
from digest.files import whole_file

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
            count = _export_to(out, lambda stream: write_export(session, stream))
            typer.echo(f"Wrote {count} subscribers to {out}.", err=True)
        for warning in export_warnings(session):
            typer.echo(f"warning: {warning}", err=True)


def _export_to(out: Path, write: Callable[[TextIO], int]) -> int:
    """Write the export to `out`: a regular file through a temporary one beside it (a reader
    never sees half of it); a device or a pipe (/dev/stdout, a FIFO) written to as it is, not
    replaced by a file. Anything else is a sentence with the fix, leaving nothing behind."""
    if out.exists() and not out.is_file() and not out.is_dir():
        try:
            with out.open("w", newline="", encoding="utf-8") as stream:
                return write(stream)
        except OSError as exc:
            raise OutputFileError(_cannot_write(out, exc)) from None
    try:
        if out.is_dir():
            raise IsADirectoryError(0, "it is a folder")
        # 0600: the export is personal data.
        with whole_file(out, text=True, mode=0o600) as stream:
            return write(cast(TextIO, stream))
    except OSError as exc:
        raise OutputFileError(_cannot_write(out, exc)) from None


def _cannot_write(out: Path, exc: OSError) -> str:
    return (
        f"Cannot write the export to {out} ({exc.strerror or type(exc).__name__}). Give --out a "
        "file in a folder that exists and this user may write to, or leave --out out for stdout."
    )
