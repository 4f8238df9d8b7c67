"""`digest catalog`: the tool catalog."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from digest.cli.app import app, engine, load_settings, print_problems

catalog_app = typer.Typer(help="The tool catalog.", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")


@catalog_app.command("import")
def catalog_import(
    file: Annotated[Path, typer.Argument(help="A verdict-digest/catalog@1 JSON file.")],
    skip_invalid: Annotated[
        bool, typer.Option("--skip-invalid", help="Import the valid records, list the rest.")
    ] = False,
) -> None:
    """Upsert tools and their reviews from a catalog JSON file."""
    from digest.catalog.importer import import_catalog
    from digest.db import session_scope

    with session_scope(engine(load_settings())) as session:
        report = import_catalog(session=session, path=file, skip_invalid=skip_invalid)
    typer.echo(
        f"Catalog {file}: {report.created} created, {report.updated} updated, "
        f"{report.unchanged} unchanged, {report.skipped} invalid left out."
    )
    print_problems(report.problems)
    print_problems(report.warnings, heading="Imported; {n} text field(s) cleaned:")
