"""The per-subscriber substitution tokens: written into bodies by the renderer, filled by senders.

A body is compiled once per content variant; these stand where each subscriber's own values go.
"""

from __future__ import annotations

UNSUBSCRIBE_URL = "%%unsubscribe_url%%"
PREFERENCES_URL = "%%preferences_url%%"
NAME_HTML = "%%name_html%%"  # replaced by the HTML-escaped name, or "there"
NAME_TEXT = "%%name_text%%"  # replaced by the raw name, or "there"
TOKENS = (UNSUBSCRIBE_URL, PREFERENCES_URL, NAME_HTML, NAME_TEXT)
