"""The `digest` command's library commands: catalog, subscribers, preview, edit, approve, status,
recall, db, web, votes, report.

Importing this package registers each command on `digest.cli.app.app`. The console script is
`flows.cli:main`, which adds the commands that run the Prefect flow (run, serve, demo).
"""

from digest.cli import (
    catalog,
    database,
    editorial,
    preview,
    recall,
    report,
    status,
    subscribers,
    votes,
    web,
)
from digest.cli.app import app, main_with

__all__ = [
    "app",
    "catalog",
    "database",
    "editorial",
    "main",
    "preview",
    "recall",
    "report",
    "status",
    "subscribers",
    "votes",
    "web",
]


def main() -> None:
    """The library's commands alone (no Prefect): `python -m digest.cli`."""
    main_with(app)
