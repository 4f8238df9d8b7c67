"""The one test of whether a text is a link we may show: an absolute http(s) URL, nothing more.

Catalog import, email rendering and the web pages all ask this same question; each decides for
itself what to do with a URL that fails (refuse the record, drop the link, fall back to "/").
"""

from __future__ import annotations

from urllib.parse import urlsplit

# Characters that could end an attribute or a link early, or hide part of the address.
_UNSAFE = frozenset('"<>`\\')


def is_http_url(value: str) -> bool:
    """Whether `value` is an absolute http(s) URL with a host, safe to put in an href as is."""
    if not value:
        return False
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F or ch in _UNSAFE for ch in value):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)
