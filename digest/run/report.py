"""The run report: the markdown that ends every run, as a Prefect artifact and in the CLI."""

from __future__ import annotations

from typing import Any

from digest.run.outcome import RunSummary


def md(text: str) -> str:
    """Catalog text is untrusted: neutralise markdown and HTML in table cells."""
    escaped = (
        text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
    )
    for char in "`*_[]#":
        escaped = escaped.replace(char, "\\" + char)
    return " ".join(escaped.split())


def render_markdown(summary: RunSummary) -> str:
    lines = [f"# verdict-digest {summary.week}", ""]
    if summary.note:
        lines += [f"**{md(summary.note)}**", ""]
    if summary.subject:
        lines += [f"Subject: {md(summary.subject)}", ""]
    lines += _catalog_lines(summary)
    if summary.approval:
        lines += [f"Approval: {md(summary.approval)}", ""]
    lines += ["## Pairs", ""]
    if summary.pairs:
        lines += ["| new | versus | category |", "|---|---|---|"]
        lines += [f"| {md(a)} | {md(b)} | {md(c)} |" for a, b, c in summary.pairs]
    else:
        lines.append("No head-to-heads this week.")
    if summary.also_new:
        lines += ["", "Also new: " + ", ".join(md(s) for s in summary.also_new)]
    lines += ["", "## Deliveries", ""]
    if summary.counts:
        lines += ["| state | count |", "|---|---|"]
        lines += [f"| {state} | {count} |" for state, count in sorted(summary.counts.items())]
        lines += [
            "",
            f"Sent by this run: {summary.sent_this_run} in {summary.batches} request(s) under "
            f"{summary.batch_ids} provider batch(es); {summary.lost_answers} answer(s) lost, "
            "each batch cancelled and its rows sent again.",
        ]
    else:
        lines.append("No deliveries recorded.")
    if summary.reasons:
        lines += ["", "Why rows are not sent:", ""]
        lines += [f"- {n} {state}: {md(reason)}" for state, reason, n in summary.reasons]
    lines += ["", "## Excluded", ""]
    if summary.excluded:
        lines += ["| slug | reason |", "|---|---|"]
        lines += [f"| {md(slug)} | {md(reason)} |" for slug, reason in summary.excluded]
    else:
        lines.append("Nothing excluded.")
    if summary.compliance:
        c = summary.compliance
        lines += [
            "",
            "## Compliance",
            "",
            "- Unsubscribe link in both parts of every variant (checked before the send): "
            + ("yes" if c.get("list_unsubscribe") else "NO"),
            "- Postal address in both parts of every variant (checked before the send): "
            + ("yes" if c.get("postal_address") else "NO"),
            f"- Largest HTML body: {c.get('max_html_bytes', 0) / 1024:.1f} KB "
            f"({'under' if c.get('html_under_102kb') else 'OVER'} Gmail's 102 KB clip; the "
            "freeze refuses a larger digest)",
        ]
        if "messages_sent" in c:
            lines.append(f"- List-Unsubscribe and List-Unsubscribe-Post headers: {_headers(c)}")
    return "\n".join(lines) + "\n"


def _headers(checks: dict[str, Any]) -> str:
    """What the send saw of the one-click headers, against the ledger's count of sends."""
    sent, seen = checks["messages_sent"], checks.get("with_unsubscribe_headers")
    if not sent:
        return "no message sent by this run"
    if seen is None:
        return f"not known for the {sent} message(s) sent: the send stopped unexpectedly"
    if seen < sent:
        return f"NO: on {seen} of the {sent} messages this run sent"
    return f"on all {sent} messages this run sent (checked on each request the provider accepted)"


def _catalog_lines(summary: RunSummary) -> list[str]:
    """Where the week's catalog came from, how fresh it was, and what the sync changed."""
    synced = summary.catalog
    if synced is None:
        return []
    return [
        "## Catalog",
        "",
        f"- Source: {md(synced.source)}",
        f"- Generated at: {md(synced.generated())}",
        f"- Changes: {md(synced.changes())}",
        "",
    ]
