"""`digest db`: the database schema."""

from __future__ import annotations

import typer

from digest.cli.app import app, load_settings

db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema of DIGEST_DATABASE_URL."""
    from digest.db import upgrade

    before, after = upgrade(load_settings().database_url)
    if before == after:
        typer.echo(f"Schema already at revision {after}.")
    else:
        typer.echo(f"Schema migrated from {before or 'empty'} to revision {after}.")
