"""The `digest` command: every entry point for editors and ops (see INTERFACE.md).

Each command is a thin shell over the library; `main` catches user errors once and prints them
as one paragraph naming the cause and the fix.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from digest.config import Settings, get_settings
from digest.errors import DigestError

if TYPE_CHECKING:
    from digest.run.steps import RunSummary

app = typer.Typer(
    name="digest",
    help="verdict-digest: the weekly email of head-to-head AI-tool verdicts.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
catalog_app = typer.Typer(help="The tool catalog.", no_args_is_help=True)
subscribers_app = typer.Typer(help="The subscriber list.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(catalog_app, name="catalog")
app.add_typer(subscribers_app, name="subscribers")

WeekOption = Annotated[
    str | None,
    typer.Option("--week", help="ISO week such as 2026-W47; default: the last complete week."),
]


def _prefect_defaults() -> None:
    """What Prefect must see before it is imported: no analytics, room for a slow first start."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def _engine(settings: Settings) -> Any:
    from digest.db import ensure_schema

    return ensure_schema(settings.database_url)


def _print_problems(problems: list[str]) -> None:
    if problems:
        typer.echo(f"Left out {len(problems)} invalid record(s):", err=True)
        for problem in problems:
            typer.echo(f"  - {problem}", err=True)


# --- db -------------------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema of DIGEST_DATABASE_URL."""
    from digest.db import upgrade

    settings = get_settings()
    before, after = upgrade(settings.database_url)
    if before == after:
        typer.echo(f"Schema already at revision {after}.")
    else:
        typer.echo(f"Schema migrated from {before or 'empty'} to revision {after}.")


# --- catalog --------------------------------------------------------------------------------------


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

    with session_scope(_engine(get_settings())) as session:
        report = import_catalog(session=session, path=file, skip_invalid=skip_invalid)
    typer.echo(
        f"Catalog {file}: {report.created} created, {report.updated} updated, "
        f"{report.unchanged} unchanged, {report.skipped} invalid left out."
    )
    _print_problems(report.problems)


# --- subscribers ----------------------------------------------------------------------------------


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

    with session_scope(_engine(get_settings())) as session:
        report = import_subscribers(session=session, path=file, skip_invalid=skip_invalid)
    typer.echo(
        f"Subscribers {file}: {report.created} created, {report.updated} updated, "
        f"{report.unchanged} unchanged, {report.kept_suppressed} kept suppressed, "
        f"{len(report.problems)} invalid left out."
    )
    _print_problems(report.problems)


@subscribers_app.command("export")
def subscribers_export(
    out: Annotated[
        Path | None, typer.Option("--out", help="Write to FILE instead of stdout.")
    ] = None,
) -> None:
    """Every subscriber as CSV: the import columns plus status."""
    from sqlmodel import Session

    from digest.audience.csv_files import write_export

    with Session(_engine(get_settings())) as session:
        if out is None:
            write_export(session, sys.stdout)
            return
        temporary = out.with_name(out.name + ".tmp")
        with temporary.open("w", newline="", encoding="utf-8") as stream:
            count = write_export(session, stream)
        temporary.replace(out)
    typer.echo(f"Wrote {count} subscribers to {out}.", err=True)


# --- preview --------------------------------------------------------------------------------------


@app.command("preview")
def preview(
    week: WeekOption = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write digest-<week>.html/.txt/.eml here.")
    ] = None,
    email: Annotated[
        str | None, typer.Option("--email", help="Render this subscriber's variant.")
    ] = None,
    output_format: Annotated[
        str, typer.Option("--format", help="html (files or a summary) or json (to stdout).")
    ] = "html",
    serve: Annotated[
        bool, typer.Option("--serve", help="Serve a live preview on 127.0.0.1.")
    ] = False,
    send_to: Annotated[
        str | None,
        typer.Option("--send-to", help="Mail this rendering to an editor, marked as a test."),
    ] = None,
    port: Annotated[
        int, typer.Option("--port", help="Port for --serve (0: any free port).")
    ] = 8025,
) -> None:
    """Render the digest of a week exactly as it would be sent, without sending it."""
    from digest.errors import ConfigError
    from digest.preview.rendering import build_preview, preview_json, send_test, write_files
    from digest.weeks import resolve_week, utcnow

    if output_format not in {"html", "json"}:
        raise ConfigError(
            f"--format {output_format!r} is not known. Use --format html or --format json."
        )
    settings = get_settings()
    the_week = resolve_week(week, now=utcnow(), zone=settings.zone)
    _engine(settings)
    if serve:
        _serve_preview(settings, the_week, email, port)
        return
    result = build_preview(settings, the_week, email=email)
    if output_format == "json":
        typer.echo(json.dumps(preview_json(result), ensure_ascii=False, indent=2))
    if out is not None:
        paths = write_files(result, out)
        typer.echo("Wrote " + ", ".join(str(p) for p in paths), err=output_format == "json")
    if send_to:
        send_test(settings, result, send_to)
        typer.echo(
            f"Sent a test copy of {the_week} to {send_to} through the "
            f"{settings.email_backend} backend.",
            err=output_format == "json",
        )
    if output_format == "html" and out is None and not send_to:
        typer.echo(f"{result.week}: {result.subject}")
        typer.echo(
            f"{len(result.content.pairs)} pair(s), {len(result.content.also_new)} also new, "
            f"{len(result.content.excluded)} excluded; "
            f"HTML {len(result.html.encode()) / 1024:.1f} KB. "
            "Use --out DIR to write the files, --serve to view them."
        )


def _serve_preview(settings: Settings, week: Any, email: str | None, port: int) -> None:
    from digest.preview.rendering import build_preview
    from digest.preview.server import PreviewBundle, serve_preview

    def render() -> PreviewBundle:
        fresh = build_preview(settings, week, email=email)
        return PreviewBundle(
            subject=fresh.subject, html=fresh.html, text=fresh.text, headers=fresh.headers
        )

    serve_preview(render, host="127.0.0.1", port=port)


# --- run, status, demo ----------------------------------------------------------------------------


def _print_summary(summary: RunSummary) -> None:
    typer.echo(f"Week {summary.week}: {summary.note or summary.subject or ''}".rstrip())
    for a, b, category in summary.pairs:
        typer.echo(f"  pair  {a} vs {b}  ({category})")
    if summary.also_new:
        typer.echo("  also new: " + ", ".join(summary.also_new))
    for slug, reason in summary.excluded:
        typer.echo(f"  excluded {slug}: {reason}")
    if summary.counts:
        counts = ", ".join(f"{state} {n}" for state, n in sorted(summary.counts.items()))
        typer.echo(f"  deliveries: {counts}; sent by this run: {summary.sent_this_run}")
    uncertain = summary.counts.get("uncertain", 0)
    if uncertain:
        typer.echo(
            f"  {uncertain} deliveries are uncertain: a run died while SendGrid held them, so "
            "their recipients may or may not have the digest. Resend them on purpose with "
            f"`digest run --week {summary.week} --resend-uncertain`."
        )


@app.command("run")
def run(
    week: WeekOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Render and report; send nothing.")
    ] = False,
    resend_uncertain: Annotated[
        bool,
        typer.Option(
            "--resend-uncertain", help="Also resend deliveries left uncertain by a crash."
        ),
    ] = False,
) -> None:
    """Run the weekly Prefect flow once, in this process."""
    from digest.weeks import IsoWeek

    if week:
        IsoWeek.parse(week)  # a bad week fails here, before Prefect starts
    _prefect_defaults()
    _engine(get_settings())
    from digest.run.steps import RunSummary
    from flows.weekly_digest import weekly_digest

    summary = weekly_digest(week=week, dry_run=dry_run, resend_uncertain=resend_uncertain)
    assert isinstance(summary, RunSummary)
    _print_summary(summary)


@app.command("status")
def status(
    week: WeekOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Delivery counts by state for a week."""
    from digest.delivery.ledger import digest_status
    from digest.weeks import resolve_week, utcnow

    settings = get_settings()
    the_week = resolve_week(week, now=utcnow(), zone=settings.zone)
    with _engine(settings).connect() as connection:
        total, counts = digest_status(connection, week=str(the_week))
    if as_json:
        typer.echo(json.dumps({"week": str(the_week), "total": total, "counts": counts}))
        return
    if not total:
        typer.echo(f"{the_week}: no deliveries recorded.")
        return
    typer.echo(f"{the_week}: {total} deliveries")
    for state, n in sorted(counts.items()):
        typer.echo(f"  {state:<12} {n}")


@app.command("demo")
def demo() -> None:
    """Seed the sample catalog and subscribers for the current week and run the flow."""
    from flows.demo import run_demo

    _prefect_defaults()
    run_demo(get_settings(), echo=typer.echo)


@app.command("serve")
def serve() -> None:
    """Serve the weekly deployment (cron schedule) for the Prefect UI, on this machine."""
    _prefect_defaults()
    _engine(get_settings())
    from flows.serve import serve_weekly

    serve_weekly(get_settings())


@app.command("web")
def web(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8000,
) -> None:
    """The subscriber-facing web app: unsubscribe, preferences, webhook, archive."""
    import uvicorn

    from digest.web.app import create_app

    settings = get_settings()
    _engine(settings)
    from digest.web.access_log import install as redact_access_log

    config = uvicorn.Config(
        create_app(settings), host=host, port=port, log_level="info", proxy_headers=True
    )
    server = uvicorn.Server(config)
    redact_access_log()  # after uvicorn configured its loggers, before the first request
    server.run()


def main() -> None:
    """Console entry point: user errors become one paragraph and a non-zero exit."""
    from sqlalchemy.exc import ArgumentError, OperationalError

    try:
        app()
    except DigestError as error:
        typer.echo(f"Error: {error}", err=True)
        sys.exit(error.exit_code)
    except (OperationalError, ArgumentError) as error:
        typer.echo(f"Error: {_database_message(error)}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("Interrupted.", err=True)
        sys.exit(130)


def _database_message(error: Exception) -> str:
    from sqlalchemy.engine import make_url

    raw = os.environ.get("DIGEST_DATABASE_URL", "sqlite:///digest.db")
    try:
        shown = make_url(raw).render_as_string(hide_password=True)
    except Exception:
        shown = "(unparsable URL)"
    reason = (
        str(getattr(error, "orig", error)).splitlines()[0] if str(error) else type(error).__name__
    )
    return (
        f"Cannot use the database {shown}: {reason}. Check DIGEST_DATABASE_URL and that the "
        "database server is running, then try again."
    )
