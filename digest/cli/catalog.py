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
    print_problems(report.problems, heading=f"Left out {report.skipped} invalid record(s):")
    print_problems(report.warnings, heading="Imported; {n} text field(s) cleaned:")


@catalog_app.command("sync")
def catalog_sync(
    url: Annotated[
        str | None,
        typer.Option(
            "--url", help="The feed to fetch instead of DIGEST_CATALOG_URL (https, file, path)."
        ),
    ] = None,
) -> None:
    """Fetch the site's catalog feed and import it, all or nothing, as `import` does."""
    from digest.catalog.feed import FeedClient, locate
    from digest.catalog.sync import sync_catalog
    from digest.errors import ConfigError

    settings = load_settings()
    where = url or settings.catalog_url
    if not where:
        raise ConfigError(
            "No catalog feed to sync: DIGEST_CATALOG_URL is not set. Set it to the site's "
            "feed (https://…/catalog.json, a file:// URL or a path), or pass --url."
        )
    report = sync_catalog(
        engine=engine(settings),
        client=FeedClient.from_settings(settings),
        location=locate(where, "--url" if url else "DIGEST_CATALOG_URL"),
    )
    typer.echo(f"Catalog {report.source} (generated: {report.generated()}): {report.changes()}.")
    print_problems(report.warnings, heading="Imported; {n} text field(s) cleaned:")
