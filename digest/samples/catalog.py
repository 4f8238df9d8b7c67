"""The demo's sample catalog: `catalog.json`, moved in time so its newest week is this week.

`catalog.json` is an ordinary `verdict-digest/catalog@1` file (`digest catalog import` takes it
as it is) laid out over six weeks, the newest being the ISO week of Monday 2 March 2026. About
30 tools, each reviewed by three of a panel of roles (Builder, Operator, Skeptic, Guardian,
Designer, Editor, Analyst), plus what real data holds: a duplicate record under another slug, a
new tool the panel has not reviewed yet, and markup in untrusted text.

`sample_catalog` shifts every date by whole weeks, keeping its weekday and wall-clock time in
the given zone, so the current week and the last complete week always have new tools and older
weeks supply incumbents. The current week's tools are, if need be, squeezed in order into the
part of the week that has passed, so that none is dated after `now`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

from digest.weeks import IsoWeek, utcnow, week_of

# Room left after the latest of this week's tools when they are squeezed, so it stays before now.
_MARGIN = timedelta(minutes=1)


def read_sample_file() -> dict[str, Any]:
    """`catalog.json` as written, with its fixed 2026 dates."""
    text = (resources.files("digest.samples") / "catalog.json").read_text(encoding="utf-8")
    document: dict[str, Any] = json.loads(text)
    return document


def sample_catalog(*, zone: ZoneInfo, now: datetime | None = None) -> dict[str, Any]:
    """The catalog document with the file's newest week moved onto the week containing `now`."""
    now = now or utcnow()
    document = read_sample_file()
    tools: list[dict[str, Any]] = document["tools"]
    # A date's weekday and time of day are read as written, then reused as wall-clock in `zone`.
    written = [datetime.fromisoformat(tool["added_at"]).replace(tzinfo=None) for tool in tools]
    newest = max(IsoWeek.containing(moment.date()) for moment in written).monday()
    this_monday = week_of(now, zone).monday()
    shift = this_monday - newest
    # Arithmetic in UTC: sums and differences in one zone would be wall-clock, off across DST.
    moved = [(moment + shift).replace(tzinfo=zone).astimezone(UTC) for moment in written]

    start = datetime.combine(this_monday, time.min, tzinfo=zone).astimezone(UTC)
    current = [i for i, moment in enumerate(written) if moment.date() >= newest]
    elapsed = max(now.astimezone(UTC) - start, timedelta(0))
    latest = max(moved[i] - start for i in current)
    if latest >= elapsed:
        scale = elapsed / (latest + _MARGIN)
        for i in current:
            moved[i] = start + (moved[i] - start) * scale

    for tool, moment in zip(tools, moved, strict=True):
        tool["added_at"] = moment.isoformat().replace("+00:00", "Z")
    return document
