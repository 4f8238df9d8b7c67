"""`digest report`: the week's engagement, and with --out a page with twelve weeks of plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from digest.cli.app import WeekOption, app, engine, load_settings

if TYPE_CHECKING:
    from digest.config import Settings
    from digest.engagement.report import Report, WeekReport
    from digest.weeks import IsoWeek

FORMATS = ("table", "json", "html")


@app.command("report")
def report(
    week: WeekOption = None,
    output_format: Annotated[
        str,
        typer.Option("--format", help="table, json, or html (the page, to stdout)."),
    ] = "table",
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write report-<week>.html, with 12 weeks of plots, here."),
    ] = None,
) -> None:
    """The week's engagement: funnel, clicks per link and pair, votes, who left."""
    from digest.errors import ConfigError
    from digest.weeks import resolve_week, utcnow

    if output_format not in FORMATS:
        raise ConfigError(
            f"--format {output_format!r} is not known. Use --format table, json or html."
        )
    if out is not None:
        _must_be_a_folder(out)
    settings = load_settings()
    the_week = resolve_week(week, now=utcnow(), zone=settings.zone)
    found = _build(settings, the_week)
    if out is not None:
        from digest.engagement.page import write_page

        path = write_page(found, out, site_name=settings.from_name)
        typer.echo(f"Wrote {path}", err=True)
    if output_format == "json":
        typer.echo(json.dumps(found.as_json(), indent=2))
    elif output_format == "html":
        from digest.engagement.page import chart_uris, render_page

        typer.echo(render_page(found, site_name=settings.from_name, charts_uris=chart_uris(found)))
    else:
        print_table(found.week)


def _must_be_a_folder(out: Path) -> None:
    """--out names a folder that exists or can be made; checked before the report is built."""
    from digest.errors import ConfigError

    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        why = f"{existing} is a file" if existing else "no such place"
        raise ConfigError(
            f"--out {out} cannot be used as a folder ({why}). Give a folder that exists or can "
            "be created, such as --out reports."
        )


def _build(settings: Settings, week: IsoWeek) -> Report:
    from digest.engagement.report import Sources, build_report
    from digest.errors import NotFoundError
    from digest.weeks import utcnow

    with engine(settings, read_only=True).connect() as connection:
        found = build_report(
            connection, week=week, sources=Sources.from_settings(settings), now=utcnow()
        )
    if found is None:
        raise NotFoundError(
            f"No digest was sent for {week}, so there is nothing to report. Pick a sent week "
            "with --week (`digest status --week W` says whether one was sent)."
        )
    return found


def _pct(rate: float | None) -> str:
    return "" if rate is None else f"{rate * 100:.2f}%"


def print_table(week: WeekReport) -> None:
    """The week's numbers as a few aligned lines."""
    rates = week.rates()
    typer.echo(f"Engagement of {week.week}: {week.subject}")
    unknown = "unknown (no provider events)"
    delivered = str(week.delivered) if week.provider_events else unknown
    opened = f"{week.opened} at least" if week.provider_events else unknown
    rows = [
        ("sent", str(week.sent), ""),
        ("delivered", delivered, _pct(rates["delivered"])),
        ("opened", opened, _pct(rates["opened"])),
        ("machine opens", str(week.machine_opened), "counted apart"),
        ("clicked", str(week.clicked), _pct(rates["clicked"])),
        ("votes", f"{week.votes} from {week.voters} reader{'' if week.voters == 1 else 's'}", ""),
        ("unsubscribed", str(week.unsubscribed), _pct(rates["unsubscribed"])),
        ("complained", str(week.complained), _pct(rates["complained"])),
        ("bounced", str(week.bounced), _pct(rates["bounced"])),
    ]
    for name, value, rate in rows:
        typer.echo(f"  {name:<14} {value:<30} {rate}".rstrip())
    kinds = ", ".join(f"{kind} {n}" for kind, n in week.clicks.items())
    typer.echo(f"  clicks by link: {kinds}")
    for pair in week.pairs:
        plural = "" if pair.clicks == 1 else "s"
        typer.echo(f"  pair {pair.a} vs {pair.b}: {pair.clicks} click{plural}")
    typer.echo("Opens are a floor: readers whose mail app loads no images are never seen opening.")
