"""`digest demo`: seed the samples, run the flow for the current week, and say what happened."""

from __future__ import annotations

import json
import os
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
from digest.weeks import utcnow, week_of


def run_demo(settings: Settings, *, echo: Callable[[str], None]) -> None:
    started = time.monotonic()
    if settings.email_backend != "outbox":
        # The demo never mails anyone for real, whatever the environment says.
        os.environ["DIGEST_EMAIL_BACKEND"] = "outbox"
        get_settings.cache_clear()
        settings = get_settings()
    engine = ensure_schema(settings.database_url)
    week = week_of(utcnow(), settings.zone)
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
        f"{tools.unchanged} unchanged tools) and subscribers ({people.created} new) into "
        f"{settings.database_url}."
    )

    from flows.temporary_server import prefect_api
    from flows.weekly_digest import weekly_digest

    echo(f"Running the weekly flow for the current week, {week} (outbox backend)...")
    with prefect_api(echo):
        summary = weekly_digest(week=str(week))
    assert isinstance(summary, RunSummary)

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
    echo(f"Done in {time.monotonic() - started:.1f} s.")
