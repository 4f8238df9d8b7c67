"""The report's plots, drawn with matplotlib as SVG text that any browser shows offline.

Glyphs are written as paths, so the page needs no font; ids are salted with a fixed string and
the date is left out, so the same numbers always give the same file. Catalog names are shown as
plain text (matplotlib's math markup is off: a "$" in a name is a dollar sign). matplotlib's
settings are process-wide, so drawings take turns.
"""

from __future__ import annotations

import io
import math
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from matplotlib import rc_context
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator
from matplotlib.typing import RcKeyType

from digest.engagement.report import WeekReport

# Gmail's spam-rate thresholds (Google's sender guidelines): stay below 0.1%, never reach 0.3%.
GMAIL_TARGET = 0.001
GMAIL_LIMIT = 0.003

_STYLE: dict[RcKeyType, Any] = {
    "svg.fonttype": "path",
    "svg.hashsalt": "verdict-digest",
    "text.parse_math": False,
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 12,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
}
# The Okabe-Ito palette: told apart with every common colour-vision deficiency.
COLOURS = {
    "sent": "#999999",
    "delivered": "#56B4E9",
    "opened": "#0072B2",
    "clicked": "#E69F00",
    "comparison": "#0072B2",
    "tool": "#E69F00",
    "vote": "#009E73",
    "unsubscribed": "#CC79A7",
    "complained": "#D55E00",
}
_DRAWING = threading.Lock()

History = Sequence[tuple[str, WeekReport | None]]


@contextmanager
def _figure(width: float, height: float) -> Iterator[tuple[Figure, Any]]:
    with _DRAWING, rc_context(_STYLE):
        figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
        FigureCanvasSVG(figure)
        yield figure, figure.add_subplot()


def _svg(figure: Figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


def week_labels(weeks: Sequence[str]) -> list[str]:
    """ "W47" under each week; the year too under the first week and the first of a new year."""
    labels = []
    for index, week in enumerate(weeks):
        year, number = week.split("-")
        new_year = index == 0 or weeks[index - 1].split("-")[0] != year
        labels.append(f"{number}\n{year}" if new_year else number)
    return labels


def shorten(text: str, limit: int = 42) -> str:
    """One line of at most `limit` characters, for an axis label."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def _value(report: WeekReport | None, name: str) -> float:
    if report is None:
        return math.nan
    unknown = name in ("delivered", "opened") and not report.provider_events
    return math.nan if unknown else float(getattr(report, name))


def funnel_chart(history: History) -> str:
    """Sent, delivered, opened and clicked, week by week, as grouped bars."""
    stages = ("sent", "delivered", "opened", "clicked")
    with _figure(9.0, 3.6) as (figure, axes):
        width = 0.2
        for offset, stage in enumerate(stages):
            xs = [i + (offset - 1.5) * width for i in range(len(history))]
            heights = [_value(report, stage) for _week, report in history]
            axes.bar(xs, heights, width, label=stage, color=COLOURS[stage])
        for i, (_week, report) in enumerate(history):
            if report is None:
                axes.text(i, 0, "no digest", rotation=90, ha="center", va="bottom", color="#666")
        _weeks_axis(axes, history)
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel("readers")
        axes.set_title("Delivery funnel, last 12 weeks")
        axes.legend(ncols=4, frameon=False, loc="upper left", bbox_to_anchor=(0, -0.22))
        return _svg(figure)


def _weeks_axis(axes: Any, history: History) -> None:
    axes.set_xticks(range(len(history)), week_labels([week for week, _ in history]))
    axes.set_xlim(-0.6, len(history) - 0.4)


def pair_clicks_chart(report: WeekReport) -> str:
    """The week's head-to-heads by clicks on their links, split by kind of link."""
    pairs = sorted(report.pairs, key=lambda pair: pair.clicks)
    with _figure(9.0, 1.2 + 0.45 * max(len(pairs), 1)) as (figure, axes):
        names = [shorten(f"{p.a_name} vs {p.b_name}") for p in pairs]
        left = [0.0] * len(pairs)
        for kind in ("comparison", "tool", "vote"):
            counts = [float(getattr(pair, kind)) for pair in pairs]
            axes.barh(names, counts, left=left, label=kind, color=COLOURS[kind])
            left = [a + b for a, b in zip(left, counts, strict=True)]
        if not pairs:
            axes.text(0.5, 0.5, "No head-to-heads this week", ha="center", transform=axes.transAxes)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("clicks (one per reader and link)")
        axes.set_title(f"Clicks per head-to-head, {report.week}")
        axes.legend(ncols=3, frameon=False, loc="lower right", bbox_to_anchor=(1, 1))
        return _svg(figure)


def pair_history_chart(history: History) -> str:
    """Each week's head-to-heads by clicks: one dot per pair, and the week's median."""
    with _figure(9.0, 3.2) as (figure, axes):
        medians = []
        for i, (_week, report) in enumerate(history):
            clicks = sorted(pair.clicks for pair in report.pairs) if report else []
            axes.scatter([i] * len(clicks), clicks, color=COLOURS["comparison"], alpha=0.7, s=22)
            medians.append(_median(clicks))
        axes.plot(range(len(history)), medians, color="#444", linewidth=1.5, label="median pair")
        _weeks_axis(axes, history)
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylim(bottom=0)
        axes.set_ylabel("clicks per pair")
        axes.set_title("Clicks per head-to-head, last 12 weeks (one dot per pair)")
        axes.legend(frameon=False, loc="upper left")
        return _svg(figure)


def _median(values: list[int]) -> float:
    if not values:
        return math.nan
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def rates_chart(history: History) -> str:
    """Unsubscribe and complaint rates week by week, against Gmail's 0.1% and 0.3% lines.

    Past 1% the scale turns logarithmic, so a bad week (or a tiny list) keeps the lines legible.
    """
    with _figure(9.0, 3.4) as (figure, axes):
        highest = GMAIL_LIMIT
        for name in ("unsubscribed", "complained"):
            rates = [_rate(report, name) for _week, report in history]
            axes.plot(range(len(history)), rates, marker="o", color=COLOURS[name], label=name)
            highest = max([highest, *(r for r in rates if not math.isnan(r))])
        if highest > 0.01:
            axes.set_yscale("symlog", linthresh=GMAIL_TARGET, linscale=1.5)
        axes.set_ylim(0, highest * 1.6 if highest > 0.01 else highest * 1.25)
        for level, colour, words, where in (
            (GMAIL_TARGET, "#B8860B", "Gmail: keep the spam rate below 0.1%", "top"),
            (GMAIL_LIMIT, "#B22222", "Gmail: never reach 0.3%", "bottom"),
        ):
            axes.axhline(level, color=colour, linestyle="--", linewidth=1)
            axes.text(-0.55, level, f" {words}", va=where, ha="left", size=9, color=colour)
        _weeks_axis(axes, history)
        axes.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v * 100:.2g}%"))
        axes.set_ylabel("of delivered emails")
        axes.set_title("Unsubscribe and complaint rates, last 12 weeks")
        axes.legend(ncols=2, frameon=False, loc="upper left", bbox_to_anchor=(0, -0.22))
        return _svg(figure)


def _rate(report: WeekReport | None, name: str) -> float:
    if report is None:
        return math.nan
    rate = report.rates()[name]
    return math.nan if rate is None else rate
