"""The report as markdown, for the Prefect artifact the daily `engagement-report` publishes.

The same numbers as the HTML page, as tables, with the plots as images (data: URIs, which
fetch nothing); a viewer that shows no such image still has every number in the tables.
Catalog text is untrusted: it is escaped for markdown and HTML before it enters a table.
"""

from __future__ import annotations

from digest.engagement.page import KINDS
from digest.engagement.report import Report, WeekReport

_MARKDOWN_SPECIALS = "\\`*_{}[]()#+!|~>-"


def escaped(text: str) -> str:
    """Text shown as written in a markdown table cell: no markup, no HTML, one line."""
    flat = " ".join(text.split()).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "".join("\\" + ch if ch in _MARKDOWN_SPECIALS else ch for ch in flat)


def _pct(rate: float | None) -> str:
    if rate is None:
        return "–"
    return f"{rate * 100:.2f}%" if 0 < rate < 0.01 else f"{rate * 100:.1f}%"


def _of_sent(rate: float | None) -> str:
    return "" if rate is None else f"{_pct(rate)} of sent"


def _funnel(week: WeekReport) -> list[str]:
    rates = week.rates()
    unknown = "– (no provider events)"
    delivered = str(week.delivered) if week.provider_events else unknown
    opened = str(week.opened) if week.provider_events else unknown
    readers = "reader" if week.voters == 1 else "readers"
    return [
        "| | readers | rate |",
        "|---|---:|---:|",
        f"| sent | {week.sent} | |",
        f"| delivered | {delivered} | {_of_sent(rates['delivered'])} |",
        f"| opened (at least) | {opened} | {_pct(rates['opened'])} |",
        f"| machine opens, apart | {week.machine_opened} | |",
        f"| clicked | {week.clicked} | {_pct(rates['clicked'])} |",
        f"| votes | {week.votes} (from {week.voters} {readers}) | |",
        f"| unsubscribed | {week.unsubscribed} | {_pct(rates['unsubscribed'])} |",
        f"| complaints | {week.complained} | {_pct(rates['complained'])} |",
        f"| bounced | {week.bounced} | {_of_sent(rates['bounced'])} |",
    ]


def _clicks(week: WeekReport) -> list[str]:
    lines = ["| link | clicks |", "|---|---:|"]
    lines += [f"| {escaped(label)} | {week.clicks.get(kind, 0)} |" for kind, label in KINDS]
    lines += ["", "| head-to-head | comparison | tool sites | votes | all |"]
    lines.append("|---|---:|---:|---:|---:|")
    lines += [
        f"| {escaped(p.a_name)} vs {escaped(p.b_name)} | {p.comparison} | {p.tool} | "
        f"{p.vote} | {p.clicks} |"
        for p in week.pairs
    ]
    return lines


def _history(report: Report) -> list[str]:
    lines = [
        "| week | sent | delivered | opened | clicked | votes | unsubscribed | complaints |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, past in report.history:
        if past is None:
            lines.append(f"| {name} | no digest sent | | | | | | |")
            continue
        rates = past.rates()
        delivered = past.delivered if past.provider_events else "–"
        lines.append(
            f"| {name} | {past.sent} | {delivered} | {past.opened} | {past.clicked} | "
            f"{past.votes} | {past.unsubscribed} ({_pct(rates['unsubscribed'])}) | "
            f"{past.complained} ({_pct(rates['complained'])}) |"
        )
    return lines


def render_markdown(report: Report, *, charts: dict[str, str]) -> str:
    """The artifact's markdown; `charts` are the plots' data: URIs (digest.engagement.page)."""
    week = report.week
    lines = [
        f"# Engagement {week.week}",
        "",
        f"Subject: {escaped(week.subject)}  ",
        f"Generated {report.generated_at.strftime('%Y-%m-%d %H:%M UTC')}; every figure counts "
        "readers. Opens are a floor: mail apps that load no images are never seen opening, and "
        "machine opens (Apple Mail Privacy Protection) are counted apart.",
        "",
        *_funnel(week),
        "",
        "## Clicks",
        "",
        f"![Clicks per head-to-head]({charts['pairs']})",
        "",
        *_clicks(week),
        "",
        "## Last 12 weeks",
        "",
        f"![Delivery funnel, last 12 weeks]({charts['funnel']})",
        "",
        f"![Clicks per head-to-head, last 12 weeks]({charts['pair_history']})",
        "",
        f"![Unsubscribe and complaint rates against Gmail's 0.1% and 0.3%]({charts['rates']})",
        "",
        *_history(report),
    ]
    return "\n".join(lines) + "\n"
