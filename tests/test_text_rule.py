"""The one text rule (digest/text.py) and catalog markup removal (digest/catalog/markup.py)."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from digest.catalog.markup import strip_markup
from digest.catalog.text_cleaning import clean_field
from digest.text import clean_text, removed_characters

ENGLAND = "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"
LEGITIMATE = [
    "👨\u200d👩\u200d👧\u200d👦 family",  # emoji ZWJ sequence
    "👩🏽\u200d💻 coder",  # skin tone, then ZWJ
    "🏳\ufe0f\u200d🌈 and ❤\ufe0f\u200d🔥",  # variation selector 16 inside ZWJ sequences
    f"{ENGLAND} England",  # emoji tag sequence
    "1\ufe0f\u20e3 keycap",
    "محمد بن سلمان",  # Arabic
    "می\u200cخواهم",  # Persian with a zero-width non-joiner
    "क्\u200dष",  # Devanagari with a zero-width joiner
    "דוד בן-גוריון",  # Hebrew
    "深度学习 ディープラーニング 딥러닝",  # CJK
    "Zoë O'Brien, PhD\tand\nmore",
    "a < b and c > d",
    "R&D, 3<5, <3 and x<y",
]


@pytest.mark.parametrize("text", LEGITIMATE)
def test_legitimate_text_passes_the_rule_untouched(text: str) -> None:
    # Emoji sequences, right-to-left scripts, CJK and comparisons are text, never "cleaned".
    assert clean_text(text) == (text, [])
    assert clean_field(text) == (text, False, [])


@pytest.mark.parametrize(
    ("dirty", "clean", "removed"),
    [
        ("abc\u200fdef", "abcdef", ["U+200F"]),
        ("\u061cabc", "abc", ["U+061C"]),
        ("x\U000e0041\U000e0042y", "xy", ["U+E0041", "U+E0042"]),  # tags spelling hidden text
        ("\U0001f3f4\U000e0041\U000e007f", "\U0001f3f4", ["U+E0041", "U+E007F"]),  # not a flag
        ("a\u2028b\u2029c", "a\nb\nc", ["U+2028", "U+2029"]),
        ("\ue000private\U000f0000", "private", ["U+E000", "U+F0000"]),
        ("zero\u200bwidth\ufeff\u00ad", "zerowidth", ["U+00AD", "U+200B", "U+FEFF"]),
        ("Pay\u200dPal", "PayPal", ["U+200D"]),  # a joiner between ASCII letters hides only
        ("\u200d👍", "👍", ["U+200D"]),
        ("A\x00b\x85c\ufffed\ufdd0e\ud800f\u202eg", "Abcdefg", None),
        ("\u2066x\u2069", "x", ["U+2066", "U+2069"]),
    ],
)
def test_format_separator_private_and_control_characters_go(
    dirty: str, clean: str, removed: list[str] | None
) -> None:
    # Invisible and direction-changing characters are removed and named, by category.
    cleaned, named = clean_text(dirty)
    assert cleaned == clean
    if removed is not None:
        assert named == removed
    assert removed_characters(dirty) == named


@given(st.text())
def test_no_format_private_or_separator_character_survives_outside_the_kept_sequences(
    text: str,
) -> None:
    # Whatever comes in, what goes out holds only joiners and flag tags among the Cf characters.
    cleaned, _ = clean_text(text)
    for character in cleaned:
        category = unicodedata.category(character)
        assert category not in ("Zl", "Zp", "Co", "Cs")
        assert category != "Cc" or character in "\t\n"
        if category == "Cf":
            assert character in "\u200c\u200d" or 0xE0020 <= ord(character) <= 0xE007F
    assert clean_text(cleaned) == (cleaned, [])


@pytest.mark.parametrize(
    ("marked", "plain"),
    [
        ("Markup <b>Mayhem</b>", "Markup Mayhem"),
        ("ClipForge <script>alert(1)</script>", "ClipForge"),
        ("x <img src=x onerror=alert(1)> y", "x y"),
        ("<img src=x onerror=alert(1)>", ""),
        ("Tail <img src=x onerror=alert(1)", "Tail"),
        ("<a href='javascript:alert(1)'>link</a>", "link"),
        ("<svg/onload=alert(1)>Svg", "Svg"),
        ("<x onclick=alert(1)>click</x>", "click"),
        ("<scr<b>ipt>alert(1)</scr</b>ipt>", ""),
        ("&lt;b&gt;escaped&lt;/b&gt;", "escaped"),
        ("&amp;lt;i&amp;gt;twice&amp;lt;/i&amp;gt;", "twice"),
        ("AT&amp;T &#233;t&#xE9;", "AT&T été"),
        ("a<!-- hidden -->b", "ab"),
        ("<style>p{color:red}</style>Styled", "Styled"),
        ("<details open>Open</details>", "Open"),
    ],
)
def test_markup_is_removed_and_its_text_kept(marked: str, plain: str) -> None:
    # Tags never reach a reader, escaped or not; the words between them do.
    assert clean_field(marked) == (plain, True, [])
    assert "<" not in strip_markup(marked) or "<" in plain


@pytest.mark.parametrize("text", ["a<b and c>d", "Use <your-api-key> here", "R&D&nbsp"])
def test_what_html_might_read_as_markup_but_text_means_stays(text: str) -> None:
    # Bare words in angle brackets that nothing closes, and references without ';', are text.
    assert strip_markup(text) == text


def test_a_reference_that_decodes_to_a_removed_character_is_removed_too() -> None:
    # Decoding cannot smuggle in what the character rule removes.
    assert clean_field("a&#x202E;b&#8207;c") == ("abc", True, ["U+200F", "U+202E"])


def test_deeply_nested_markup_loses_its_angle_brackets() -> None:
    # Eight passes undo any honest nesting; past that no tag text is left either way.
    nested = "<" * 20 + "b>" * 20 + "x"  # each pass removes one <b> and joins the next
    assert strip_markup("<<b>b>x") == "x"
    assert clean_field(nested)[0] == "bbbbbbbbbbbbx"
