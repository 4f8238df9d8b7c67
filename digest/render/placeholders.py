"""The per-subscriber substitution tokens: written into bodies by the renderer, filled by senders.

A body is compiled once per content variant; these tokens stand where each subscriber's own
values go. The values come from here in every case (a send, a preview, the public archive), and
`digest.send.base.substitute` (or the provider, server-side) puts them in place.
"""

from __future__ import annotations

import html
import unicodedata

UNSUBSCRIBE_URL = "%%unsubscribe_url%%"
PREFERENCES_URL = "%%preferences_url%%"
NAME_HTML = "%%name_html%%"  # replaced by the HTML-escaped name, or "there"
NAME_TEXT = "%%name_text%%"  # replaced by the raw name, or "there"
# The delivery's signed vote token (digest.links.Links.vote_token), about 40 characters: the
# templates build every Ship/Skip link from it, and add it to links to our own pages so that
# `digest web` counts the visit. One short value keeps each recipient's substitutions far below
# SendGrid's 10,000 bytes however many tools a week shows.
VOTE_TOKEN = "%%vote_token%%"  # noqa: S105 (a placeholder, no secret)
TOKENS = (UNSUBSCRIBE_URL, PREFERENCES_URL, NAME_HTML, NAME_TEXT, VOTE_TOKEN)

# What copies for no subscriber in particular carry instead of a vote token. Neither is a token
# (a token always holds a "."), so their links open a page that says they cannot vote.
ARCHIVE_VOTE_TOKEN = "archive"  # noqa: S105
PREVIEW_VOTE_TOKEN = "preview"  # noqa: S105
UNPERSONAL_VOTE_TOKENS = frozenset({ARCHIVE_VOTE_TOKEN, PREVIEW_VOTE_TOKEN})

# The greeting when a subscriber has no name (and on pages for no one in particular).
NEUTRAL_NAME = "there"


# Words before a name that are not the name: "Dr. Ada Lovelace" is greeted as Ada.
_TITLES = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "mx",
        "miss",
        "dr",
        "prof",
        "sir",
        "dame",
        "lady",
        "lord",
        "rev",
        "fr",
        "herr",
        "frau",
        "mme",
        "mlle",
        "sr",
        "sra",
    ]
)

# Words after a comma that are not a first name: "Zoë O'Brien, PhD" is greeted as Zoë.
_SUFFIXES = frozenset(
    ["phd", "md", "jr", "sr", "ii", "iii", "iv", "esq", "mba", "msc", "bsc", "dds", "rn", "cpa"]
)

_FAMILY_FIRST_SCRIPTS = ("CJK", "HANGUL", "HIRAGANA", "KATAKANA")


def _family_name_first(text: str) -> bool:
    """Whether the name uses a script whose names usually start with the family name."""
    return any(unicodedata.name(ch, "").startswith(_FAMILY_FIRST_SCRIPTS) for ch in text)


def _given_words(words: list[str]) -> list[str]:
    """The words that start with the given name: after the comma of "Last, First" forms."""
    flat = " ".join(words)
    if flat.count(",") != 1:
        return [] if "," in flat else words
    last, _, rest = flat.partition(",")
    if rest.strip().replace(".", "").casefold() in _SUFFIXES:
        # "Smith, Jr." leaves a surname alone: no first name to tell.
        before = last.split()
        return before if len(before) > 1 else []
    return rest.split() if last.strip() else []


def first_name(name: str | None) -> str | None:
    """The first name to greet by, or None when it cannot be told with confidence.

    "Liskov, Barbara" gives Barbara; "Ada Lovelace", "Dr. Ada Lovelace" and "Ada Lovelace, PhD"
    give Ada; a single word is taken as the name. Initials, more than one comma, words without
    a letter, and names in scripts written family name first (Chinese, Japanese, Korean) give None.
    """
    if not name or "@" in name:
        return None
    # Called once per recipient of a send: ASCII names skip the per-character script lookup.
    if not name.isascii() and _family_name_first(name):
        return None
    words = name.split()
    if "," in name:
        words = _given_words(words)
    while words and words[0].rstrip(".").casefold() in _TITLES:
        words = words[1:]
    if not words:
        return None
    first = words[0]
    if first.endswith(".") or len(first) < 2 or not any(map(str.isalpha, first)):
        return None
    return first


def greeting_substitutions(name: str | None) -> dict[str, str]:
    """The greeting tokens: HTML-escaped for the HTML part, raw for the text part."""
    shown = first_name(name) or NEUTRAL_NAME
    return {NAME_HTML: html.escape(shown, quote=True), NAME_TEXT: shown}


def subscriber_substitutions(
    *, unsubscribe_url: str, preferences_url: str, name: str | None, vote_token: str
) -> dict[str, str]:
    """Every token's value for one subscriber; `vote_token` is their delivery's (a preview's
    `PREVIEW_VOTE_TOKEN`)."""
    return {
        UNSUBSCRIBE_URL: unsubscribe_url,
        PREFERENCES_URL: preferences_url,
        **greeting_substitutions(name),
        VOTE_TOKEN: vote_token,
    }


def neutral_substitutions(site_url: str | None) -> dict[str, str]:
    """Values for a body shown to no one in particular: the public archive of a digest."""
    base = site_url.rstrip("/") if site_url else None
    return {
        UNSUBSCRIBE_URL: f"{base}/unsubscribe" if base else "#",
        PREFERENCES_URL: f"{base}/preferences" if base else "#",
        **greeting_substitutions(None),
        VOTE_TOKEN: ARCHIVE_VOTE_TOKEN,
    }
