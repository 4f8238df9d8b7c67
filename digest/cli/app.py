"""The `digest` command's Typer application, its shared options, and the one place user errors
become a paragraph on stderr and a non-zero exit.

Each command is a thin shell over the library, in a module named for what it works on; the
Prefect-backed commands (run, serve, demo) are added by `flows/cli.py`, beside the flow.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from digest.errors import DigestError

if TYPE_CHECKING:
    from digest.config import Settings

app = typer.Typer(
    name="digest",
    help="verdict-digest: the weekly email of head-to-head AI-tool verdicts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

WeekOption = Annotated[
    str | None,
    typer.Option("--week", help="ISO week such as 2026-W47; default: the last complete week."),
]


def load_settings() -> Settings:
    """The process's settings. Imported here, not at the top: `--help` needs none of it."""
    from digest.config import get_settings

    return get_settings()


def engine(settings: Settings, *, read_only: bool = False) -> Any:
    """The database engine, its schema created when the database is empty.

    A read-only command never creates a missing SQLite file: an empty new database would report
    "nothing sent" for a week another database holds.
    """
    from digest.db import ensure_schema, missing_sqlite_file, shown_url
    from digest.errors import ConfigError

    missing = missing_sqlite_file(settings.database_url) if read_only else None
    if missing is not None:
        raise ConfigError(
            f"There is no database at {missing.resolve()} "
            f"({shown_url(settings.database_url)}), so there is nothing to read. Set "
            "DIGEST_DATABASE_URL to the database the runs use (the worker's or `digest serve`'s), "
            "or run this command from the folder that holds it."
        )
    return ensure_schema(settings.database_url)


def print_problems(
    problems: list[str], *, heading: str = "Left out {n} invalid record(s):"
) -> None:
    if problems:
        typer.echo(heading.format(n=len(problems)), err=True)
        for problem in problems:
            typer.echo(f"  - {problem}", err=True)


def main_with(command: typer.Typer) -> None:
    """Run `command`: user errors become one paragraph and a non-zero exit, never a traceback."""
    from sqlalchemy.exc import ArgumentError, DatabaseError, OperationalError

    try:
        command()
    except DigestError as error:
        typer.echo(f"Error: {error}", err=True)
        sys.exit(error.exit_code)
    except (OperationalError, ArgumentError) as error:
        typer.echo(f"Error: {_database_message(error)}", err=True)
        sys.exit(2)
    except DatabaseError as error:
        if not _not_a_database(error):
            raise  # a statement of ours that failed: a bug, shown as one
        typer.echo(f"Error: {_not_a_database_message(error)}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("Interrupted.", err=True)
        sys.exit(130)


def _database_url() -> str:
    """The database URL the settings use (a `.env` file included), as the failing command did."""
    from digest.config import get_settings

    try:
        return get_settings().database_url
    except DigestError:
        return os.environ.get("DIGEST_DATABASE_URL", "sqlite:///digest.db")


def _database_message(error: Exception) -> str:
    from digest.db import shown_url

    shown = shown_url(_database_url())
    reason = (
        str(getattr(error, "orig", error)).splitlines()[0] if str(error) else type(error).__name__
    )
    return (
        f"Cannot use the database {shown}: {reason}. Check DIGEST_DATABASE_URL and that the "
        "database server is running, then try again."
    )


# What SQLite says of a file that is no database of its own (SQLITE_NOTADB, SQLITE_CORRUPT).
_NOT_SQLITE = ("file is not a database", "database disk image is malformed")


def _not_a_database(error: Exception) -> bool:
    reason = str(getattr(error, "orig", error))
    return any(sign in reason for sign in _NOT_SQLITE)


def _not_a_database_message(error: Exception) -> str:
    from digest.db import shown_url

    reason = str(getattr(error, "orig", error)).splitlines()[0]
    return (
        f"Cannot use the database {shown_url(_database_url())}: {reason}. The file is not a "
        "SQLite database, or it is damaged. Set DIGEST_DATABASE_URL to the digest's database "
        "file (a new name makes a new, empty one), or restore this one from a backup."
    )
