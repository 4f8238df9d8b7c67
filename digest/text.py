"""The characters no email, header or page of ours carries: one rule for every text we show.

Ground floor: the catalog's import, subscriber names, the editor's text and the message builder
all ask this module, so a character is refused or removed the same way everywhere. The rule goes
by Unicode general category, not by a list of known offenders:

- control characters (Cc: C0, DEL, C1) other than tab and newline, NUL included;
- format characters (Cf): direction marks and embeddings (U+200E, U+200F, U+061C, U+202A..E,
  U+2066..9), zero-width spaces, the byte-order mark, soft hyphens, invisible operators, the tag
  characters of the U+E0000 block (which can spell hidden ASCII text);
- line and paragraph separators (Zl, Zp): they become a newline, the line break we keep;
- private-use characters (Co), which mean nothing outside the font that defined them;
- surrogates (Cs) and the noncharacters (U+FDD0..U+FDEF and the last two code points of every
  plane).

Three kinds of format character are kept where they do a real job, and only there:
- U+200D ZERO WIDTH JOINER and U+200C ZERO WIDTH NON-JOINER between two non-ASCII letters,
  marks or symbols: emoji ZWJ sequences (family, profession, rainbow flag), Persian and Indic
  words; anywhere else (next to ASCII, a space, an edge) they only hide things and go;
- tag characters inside a well-formed emoji tag sequence (UTS #51): U+1F3F4 WAVING BLACK FLAG,
  two to six tag letters or digits, U+E007F CANCEL TAG, as in the flags of England, Scotland
  and Wales; a tag anywhere else goes.
Variation selectors and emoji skin-tone modifiers are marks and symbols (Mn, Sk), not format
characters, so emoji keep them. Unassigned code points (Cn) are kept: a newer Unicode than this
Python's may have given them meaning (new emoji), and they reorder nothing.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# A display name longer than this does not fit a readable To header.
DISPLAY_NAME_LIMIT = 200

_KEPT_CONTROLS = frozenset("\t\n")
_SEPARATORS = frozenset("\u2028\u2029")  # Zl, Zp: replaced by a newline
_JOINERS = frozenset("\u200c\u200d")
_TAG_BASE = "\U0001f3f4"
_CANCEL_TAG = "\U000e007f"
_TAG_SEQUENCE = re.compile(
    "\U0001f3f4([\U000e0030-\U000e0039\U000e0061-\U000e007a]{2,6})\U000e007f"
)


def _is_noncharacter(point: int) -> bool:
    return 0xFDD0 <= point <= 0xFDEF or point & 0xFFFE == 0xFFFE


def is_removed(character: str) -> bool:
    """Whether the rule removes the character wherever it stands (context: `clean_text`)."""
    if character in _KEPT_CONTROLS:
        return False
    point = ord(character)
    if _is_noncharacter(point):
        return True
    return unicodedata.category(character) in ("Cc", "Cf", "Zl", "Zp", "Co", "Cs")


@lru_cache(maxsize=1)
def _suspects() -> re.Pattern[str]:
    """A character class that matches every character the rule may remove or keep only in
    context, and some it keeps: every character outside the BMP is looked at one by one.

    Built once from this Python's Unicode tables. A class listing the supplementary planes'
    format and private-use ranges one by one takes Python's regex engine 40 times longer per
    character than one range for them all (measured: 260 against 6 µs on 700 characters), and
    nearly all text we see is in the BMP."""
    points = [p for p in range(0x10000) if is_removed(chr(p)) or chr(p) in _JOINERS]
    ranges: list[tuple[int, int]] = []
    for point in points:
        if ranges and ranges[-1][1] == point - 1:
            ranges[-1] = (ranges[-1][0], point)
        else:
            ranges.append((point, point))
    ranges.append((0x10000, 0x10FFFF))
    parts = [
        re.escape(chr(low)) if low == high else f"{re.escape(chr(low))}-{re.escape(chr(high))}"
        for low, high in ranges
    ]
    return re.compile("[" + "".join(parts) + "]")


def _joins(neighbour: str) -> bool:
    """Whether a joiner next to this character can be doing a script's or an emoji's work."""
    if not neighbour or neighbour.isascii():
        return False
    return unicodedata.category(neighbour)[0] in "LM" or unicodedata.category(neighbour) in (
        "So",
        "Sk",
    )


def _tag_positions(text: str) -> set[int]:
    """The indexes of tag characters that belong to a well-formed emoji tag sequence."""
    kept: set[int] = set()
    for match in _TAG_SEQUENCE.finditer(text):
        kept.update(range(match.start() + 1, match.end()))
    return kept


def _cleaned(text: str) -> tuple[str, set[str]]:
    tags = _tag_positions(text) if _TAG_BASE in text else set()
    out: list[str] = []
    removed: set[str] = set()
    last = len(text) - 1
    for index, character in enumerate(text):
        if character in _JOINERS:
            before = out[-1] if out else ""
            after = text[index + 1] if index < last else ""
            if _joins(before) and _joins(after):
                out.append(character)
                continue
        elif index in tags or not is_removed(character):
            out.append(character)
            continue
        removed.add(f"U+{ord(character):04X}")
        if character in _SEPARATORS:
            out.append("\n")
    return "".join(out), removed


def clean_text(text: str) -> tuple[str, list[str]]:
    """The text without the characters the rule removes (line and paragraph separators become
    newlines), and each removed one as U+XXXX (sorted, once)."""
    if text.isprintable() or not _suspects().search(text):  # isprintable: the fastest test
        return text, []
    cleaned, removed = _cleaned(text)
    return cleaned, sorted(removed)


def removed_characters(text: str) -> list[str]:
    """The characters `clean_text` would remove from `text`, each once as U+XXXX, sorted."""
    return clean_text(text)[1]


def decoded_words(name: str) -> str:
    """A display name as mail apps show it: RFC 2047 encoded words (`=?utf-8?q?...?=`) decoded.

    Left encoded, a name stays one atom only until a header parser decodes it, after the
    quoting was decided: Python's did, and `=?utf-8?q?Boss_=3Cx=40evil.com=3E=2C?=` became a
    second mailbox in the To header. Decoded first, the name is quoted as the text it shows.
    Words that decode to more words are decoded again, twice at most; what still looks like one
    after that is broken apart, and control characters a word decoded to become spaces."""
    if "=?" not in name or "?=" not in name:
        return name  # the common case: nothing to decode
    for _ in range(3):
        # Space between two encoded words is not part of the text (RFC 2047, section 6.2).
        decoded = _ENCODED_WORD.sub(_decoded_word, _BETWEEN_WORDS.sub("", name))
        if decoded == name:
            break
        name = decoded
    name = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in name)
    return name.replace("=?", "= ?") if "?=" in name else name


# charset?encoding?text, as RFC 2047 writes a word; no spaces inside.
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
_BETWEEN_WORDS = re.compile(r"(?<=\?=)\s+(?==\?)")


def _decoded_word(word: re.Match[str]) -> str:
    from email.errors import HeaderParseError
    from email.header import decode_header, make_header

    try:
        return str(make_header(decode_header(word.group())))
    except (HeaderParseError, LookupError, UnicodeError, ValueError):
        return word.group().replace("=?", "= ?")  # undecodable: shown as typed, inert
