"""The per-subscriber substitution tokens: written into bodies by the renderer, filled by senders.

A body is compiled once per content variant; these tokens stand where each subscriber's own
values go. The values come from here in every case (a send, a preview, the public archive), and
`digest.send.base.substitute` (or the provider, server-side) puts them in place.
"""

from __future__ import annotations

import html

UNSUBSCRIBE_URL = "%%unsubscribe_url%%"
PREFERENCES_URL = "%%preferences_url%%"
NAME_HTML = "%%name_html%%"  # replaced by the HTML-escaped name, or "there"
NAME_TEXT = "%%name_text%%"  # replaced by the raw name, or "there"
TOKENS = (UNSUBSCRIBE_URL, PREFERENCES_URL, NAME_HTML, NAME_TEXT)

# The greeting when a subscriber has no name (and on pages for no one in particular).
NEUTRAL_NAME = "there"


def greeting_substitutions(name: str | None) -> dict[str, str]:
    """The greeting tokens: HTML-escaped for the HTML part, raw for the text part."""
    shown = " ".join((name or "").split()) or NEUTRAL_NAME
    return {NAME_HTML: html.escape(shown, quote=True), NAME_TEXT: shown}


def subscriber_substitutions(
    *, unsubscribe_url: str, preferences_url: str, name: str | None
) -> dict[str, str]:
    """Every token's value for one subscriber."""
    return {
        UNSUBSCRIBE_URL: unsubscribe_url,
        PREFERENCES_URL: preferences_url,
        **greeting_substitutions(name),
    }


def neutral_substitutions(site_url: str | None) -> dict[str, str]:
    """Values for a body shown to no one in particular: the public archive of a digest."""
    base = site_url.rstrip("/") if site_url else None
    return {
        UNSUBSCRIBE_URL: f"{base}/unsubscribe" if base else "#",
        PREFERENCES_URL: f"{base}/preferences" if base else "#",
        **greeting_substitutions(None),
    }
