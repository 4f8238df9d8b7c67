"""The report as one HTML page that an editor opens from disk: numbers, tables and plots.

Nothing on it is fetched: the stylesheet is inline, the plots are SVG images held in the page
as data: URIs (which never reach a network and run no script), and its Content-Security-Policy
forbids loading anything else. Every text on it (catalog names, the subject) is autoescaped.
"""

from __future__ import annotations

import base64
from pathlib import Path

import jinja2

from digest.engagement import charts
from digest.engagement.report import Report
from digest.engagement.visits import LinkKind

TEMPLATES = Path(__file__).parent / "templates"

# The kinds of link in the order and words the page shows them.
KINDS = (
    (LinkKind.COMPARISON.value, "Comparison pages (Read the full comparison)"),
    (LinkKind.TOOL.value, "Tools' sites"),
    (LinkKind.VOTE.value, "Ship and Skip links (opening one counts here; votes are above)"),
    (LinkKind.ARCHIVE.value, "View in browser"),
    (LinkKind.OTHER.value, "Other links"),
)


def image_uri(svg: str) -> str:
    """An SVG as a data: URI for an <img>: shown as a picture, never run as a document."""
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode("utf-8")).decode("ascii")


def chart_uris(report: Report) -> dict[str, str]:
    """Every plot of the report, as data: URIs."""
    return {
        "funnel": image_uri(charts.funnel_chart(report.history)),
        "pairs": image_uri(charts.pair_clicks_chart(report.week)),
        "pair_history": image_uri(charts.pair_history_chart(report.history)),
        "rates": image_uri(charts.rates_chart(report.history)),
    }


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_page(report: Report, *, site_name: str, charts_uris: dict[str, str]) -> str:
    """The whole page, with the plots `chart_uris` drew."""
    return (
        _environment()
        .get_template("report.html")
        .render(
            week=report.week,
            history=report.history,
            generated=report.generated_at.strftime("%Y-%m-%d %H:%M UTC"),
            site_name=site_name,
            charts=charts_uris,
            kinds=KINDS,
            target=charts.GMAIL_TARGET,
            limit=charts.GMAIL_LIMIT,
        )
    )


def write_page(report: Report, directory: Path, *, site_name: str) -> Path:
    """`report-<week>.html` in `directory`, made if missing."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"report-{report.week.week}.html"
    page = render_page(report, site_name=site_name, charts_uris=chart_uris(report))
    path.write_text(page, encoding="utf-8")
    return path
