"""The characters no email, header or page of ours carries: one rule for every text we show.

Ground floor: the catalog's import, subscriber names, the editor's text and the message builder
all ask this module, so a character is refused or removed the same way everywhere. Removed:
C0 and C1 control characters other than tab and newline (NUL included), Unicode noncharacters
(U+FDD0..U+FDEF and the last two code points of every plane), lone surrogates, and the
bidirectional controls (RLO, LRO, LRE, RLE, PDF, LRI, RLI, FSI, PDI) that would reorder a
subject, a page or a To name.
"""

from __future__ import annotations

BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_KEPT_CONTROLS = frozenset("\t\n")
# A display name longer than this does not fit a readable To header.
DISPLAY_NAME_LIMIT = 200


def is_removed(character: str) -> bool:
    """Whether the character is one no text of ours carries (rule: module docstring)."""
    point = ord(character)
    if character in _KEPT_CONTROLS:
        return False
    if point < 0x20 or 0x7F <= point <= 0x9F:
        return True
    if 0xD800 <= point <= 0xDFFF or 0xFDD0 <= point <= 0xFDEF:
        return True
    if point & 0xFFFE == 0xFFFE:
        return True
    return character in BIDI_CONTROLS


def removed_characters(text: str) -> list[str]:
    """The removed characters `text` holds, each once as U+XXXX, sorted."""
    return sorted({f"U+{ord(ch):04X}" for ch in text if is_removed(ch)})


def clean_text(text: str) -> tuple[str, list[str]]:
    """The text without removed characters, and each removed one as U+XXXX (sorted, once)."""
    removed = removed_characters(text)
    if not removed:
        return text, []
    return "".join(ch for ch in text if not is_removed(ch)), removed
