"""HTML in catalog text: tags removed, their text kept, so readers never see markup.

Catalog text is plain text; a site that exports it from HTML leaves tags ("Markup <b>Mayhem</b>")
and character references ("AT&amp;T") in it. Escaped and shown as they are, they read as a
broken email, so the import takes them out:

- a character reference ending in `;` (`&amp;`, `&#233;`, `&#x1F600;`) becomes its character;
  one without the `;` is left alone, since "R&D&nbsp" is more likely text than HTML;
- a tag is removed and the text between tags kept: "Markup <b>Mayhem</b>" is "Markup Mayhem";
- `<script>` and `<style>` go with everything up to their end tag (or the end of the text):
  their content is code, not prose, and "ClipForge alert(1)" helps no reader;
- comments, `<!DOCTYPE …>`, `<![CDATA[…]]>` and `<?…?>` are removed whole.

What counts as a tag is what HTML itself would read as one, less what plain text means more
often: `<` followed by a letter, an element name and attributes up to `>` (or the end of the
text, where HTML drops an unfinished tag too). An end tag (`</x>`) always counts. A start tag
counts when it names an HTML, SVG or MathML element or carries an attribute with a value
(`<x onclick=…>`); a start tag with bare words only counts when its element is closed later, so
"a<b and c>d" stays text while "<details open>…</details>" does not. "a < b and c > d" is never
markup (no letter follows the `<`).

Removing a tag can join the halves of another (`<scr<b>ipt>`), so the rule runs again until
nothing changes, at most `_PASSES` times; text still holding a tag after that loses its angle
brackets, which no honest catalog text needs so deeply nested.
"""

from __future__ import annotations

import html
import re

_PASSES = 8
_REFERENCE = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_SPECIAL = re.compile(r"<!--.*?(?:-->|\Z)|<![A-Za-z\[].*?(?:>|\Z)|<\?.*?(?:>|\Z)", re.DOTALL)
# A tag: name, then attributes (quoted values may hold `>`), then `>` or the end of the text.
_TAG = re.compile(
    r"""<(/?)([A-Za-z][A-Za-z0-9:_-]*+)((?:[^>"'<]++|"[^"]*+(?:"|\Z)|'[^']*+(?:'|\Z))*+)(?:>|\Z)"""
)
_VALUED_ATTRIBUTE = re.compile(r"""[^\s"'=/<>]+\s*=""")
_RAW_TEXT = frozenset({"script", "style"})
_ELEMENT_NAMES = """
a abbr acronym address animate animatemotion animatetransform applet area article aside audio b base
basefont bdi bdo bgsound big blink blockquote body br button canvas caption center circle
cite clippath code col colgroup data datalist dd defs del desc details dfn dialog
dir div dl dt ellipse em embed feimage fieldset figcaption figure filter font footer
foreignobject form frame frameset g h1 h2 h3 h4 h5 h6 head header hgroup
hr html i iframe image img input ins isindex kbd keygen label legend li
line lineargradient link listing main map mark marquee math menu menuitem meta meter mi
mn mo ms mtext multicol nav nextid nobr noembed noframes noscript object ol optgroup
option output p param path pattern picture plaintext polygon polyline portal pre progress q
radialgradient rb rect rp rt rtc ruby s samp script search section select set
slot small source spacer span stop strike strong style sub summary sup svg switch
symbol table tbody td template text textarea textpath tfoot th thead time title tr
track tspan tt u ul use var video wbr xmp
"""
ELEMENTS = frozenset(_ELEMENT_NAMES.split())


def _decode_references(text: str) -> str:
    return _REFERENCE.sub(lambda match: html.unescape(match.group(0)), text)


def _closed_later(text: str, name: str, after: int) -> bool:
    return re.search(rf"</{re.escape(name)}\s*>", text[after:], re.IGNORECASE) is not None


def _is_tag(text: str, match: re.Match[str]) -> bool:
    closing, name, attributes = match.group(1), match.group(2).lower(), match.group(3)
    if closing or _VALUED_ATTRIBUTE.search(attributes):
        return True
    if name not in ELEMENTS:
        return False
    bare_words = attributes.strip().strip("/").strip()
    return not bare_words or _closed_later(text, name, match.end())


def _without_tags(text: str) -> str:
    """One pass: every tag removed, script and style with their content."""
    text = _SPECIAL.sub("", text)
    kept: list[str] = []
    position = 0
    for match in _TAG.finditer(text):
        if match.start() < position or not _is_tag(text, match):
            continue
        kept.append(text[position : match.start()])
        position = match.end()
        name = match.group(2).lower()
        if not match.group(1) and name in _RAW_TEXT:
            end = re.compile(rf"</{name}\s*(?:>|\Z)", re.IGNORECASE).search(text, position)
            position = end.end() if end else len(text)
    kept.append(text[position:])
    return "".join(kept)


def has_markup(text: str) -> bool:
    """Whether the text holds a tag or a character reference this module would take out."""
    if "&" in text and _REFERENCE.search(text):
        return True
    if "<" not in text:
        return False
    return _SPECIAL.search(text) is not None or any(
        _is_tag(text, match) for match in _TAG.finditer(text)
    )


def strip_markup(text: str) -> str:
    """The text without tags and with character references decoded (rule: module docstring)."""
    for _ in range(_PASSES):
        if not has_markup(text):
            return text
        text = _without_tags(_decode_references(text))
    return text if not has_markup(text) else text.replace("<", "").replace(">", "")
