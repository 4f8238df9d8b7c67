"""`digest demo`: the samples seeded into a database of its own, the flow run for the last
complete week (the week a Monday run sends), and what happened.

The demo never touches the database, the feed or the mail of the shell it runs in: it works in
`./demo.db` and writes mail to the outbox, with approval off and no catalog feed, so the
runbook's and the editor's examples (on `./digest.db`, the sample catalog's own 2026 weeks) work
before or after it, in any order. The sample catalog is moved in time so that the last complete
week has new tools (digest/samples/catalog.py).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from digest.audience.csv_files import import_subscribers
from digest.catalog.importer import import_catalog
from digest.config import Settings, get_settings
from digest.db import ensure_schema, session_scope
from digest.run.outcome import RunSummary
from digest.samples.catalog import sample_catalog
from digest.weeks import IsoWeek, last_complete_week, utcnow

DEMO_DATABASE = "sqlite:///demo.db"
# What the demo sets for itself, whatever the shell says: its own database, mail to files only,
# no feed to fetch, no approval to wait for.
DEMO_ENVIRONMENT = {
    "DIGEST_DATABASE_URL": DEMO_DATABASE,
    "DIGEST_EMAIL_BACKEND": "outbox",
    "DIGEST_CATALOG_URL": "",
    "DIGEST_APPROVAL": "off",
}


def demo_settings() -> Settings:
    """The settings of the shell, with the demo's own database, outbox, no feed, no approval;
    the flow's tasks read the same, from this process's environment."""
    os.environ.update(DEMO_ENVIRONMENT)
    get_settings.cache_clear()
    return get_settings()


def run_demo(echo: Callable[[str], None]) -> None:
    started = time.monotonic()
    settings = demo_settings()
    week = last_complete_week(utcnow(), settings.zone)
    _seed(settings, echo)

    from flows.temporary_server import prefect_api
    from flows.weekly_digest import weekly_digest

    echo(
        f"Running the weekly flow for {week}, the last complete week: the week a Monday run "
        "sends (outbox backend)..."
    )
    with prefect_api(echo):
        summary = weekly_digest(week=str(week))
    assert isinstance(summary, RunSummary)
    _report(settings, week, summary, echo)
    echo(f"Done in {time.monotonic() - started:.1f} s.")


def _seed(settings: Settings, echo: Callable[[str], None]) -> None:
    engine = ensure_schema(settings.database_url)
    with tempfile.TemporaryDirectory() as folder:
        catalog_path = Path(folder) / "catalog.json"
        catalog_path.write_text(json.dumps(sample_catalog(zone=settings.zone)), encoding="utf-8")
        with session_scope(engine) as session:
            tools = import_catalog(session=session, path=catalog_path)
    sample_people = resources.files("digest.samples") / "subscribers.csv"
    with resources.as_file(sample_people) as csv_path, session_scope(engine) as session:
        people = import_subscribers(session=session, path=csv_path)
    echo(
        f"Seeded the sample catalog ({tools.created} new, {tools.updated} updated, "
        f"{tools.unchanged} unchanged tools) and subscribers ({people.created} new) into the "
        f"demo's own database, {DEMO_DATABASE} (DIGEST_DATABASE_URL is not used)."
    )


def _report(
    settings: Settings, week: IsoWeek, summary: RunSummary, echo: Callable[[str], None]
) -> None:
    from digest.preview.rendering import build_preview, write_files

    preview_paths = write_files(build_preview(settings, week), Path("preview"))
    outbox = settings.outbox_dir / str(week)
    messages = sorted(outbox.glob("*.eml")) if outbox.exists() else []
    echo("")
    echo(f"Week {summary.week}: {summary.subject or summary.note}")
    if summary.note:
        echo(f"  {summary.note}")
    echo(
        f"  tools selected: {summary.new_tools} new this week; {len(summary.pairs)} head-to-heads, "
        f"{len(summary.also_new)} also new, {len(summary.excluded)} excluded"
    )
    for a, b, category in summary.pairs:
        echo(f"    {a} vs {b} ({category})")
    for slug in summary.also_new:
        echo(f"    also new: {slug}")
    for slug, reason in summary.excluded:
        echo(f"    excluded {slug}: {reason}")
    counts = ", ".join(f"{state} {n}" for state, n in sorted(summary.counts.items()))
    echo(f"  deliveries: {counts or 'none'}")
    echo(f"  messages written by this run: {summary.sent_this_run}; in the outbox: {len(messages)}")
    echo(f"  outbox: {outbox.resolve()}")
    echo(f"  HTML preview: {preview_paths[0].resolve()}")
    look = f"{_command()} preview --week {week} --serve"
    echo(f"  look again: DIGEST_DATABASE_URL={DEMO_DATABASE} {look}")


def _command() -> str:
    """The command as this shell can run it: `make demo` runs .venv/bin/digest, not on PATH."""
    program = Path(sys.argv[0])
    if program.name != "digest" or len(program.parts) == 1:
        return "digest"
    try:
        return str(program.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(program)
