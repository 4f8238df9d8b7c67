"""MJML into email HTML: mjml-python compiles it, css-inline applies the CSS the template marks
`inline="inline"` (mjml-python does not), and a broken template or MJML is reported with the
template file and line that produced it, never as mjml-python's bare message.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import css_inline
import mjml

from digest.errors import TemplateError

HTML_TEMPLATE = "digest.mjml.j2"
_INLINE_STYLE = re.compile(r"<mj-style\s+inline=\"inline\"\s*>(.*?)</mj-style>", re.DOTALL)


def template_path(path: str | None) -> str:
    """A template path as people read it: relative to the working folder when inside it."""
    if not path:
        return "<unknown template>"
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return path


_MJML_TAGS = frozenset(
    [
        "mjml",
        "mj-head",
        "mj-body",
        "mj-title",
        "mj-preview",
        "mj-attributes",
        "mj-all",
        "mj-class",
        "mj-style",
        "mj-font",
        "mj-breakpoint",
        "mj-include",
        "mj-raw",
        "mj-section",
        "mj-wrapper",
        "mj-group",
        "mj-column",
        "mj-text",
        "mj-button",
        "mj-image",
        "mj-divider",
        "mj-spacer",
        "mj-table",
        "mj-social",
        "mj-social-element",
        "mj-navbar",
        "mj-navbar-link",
        "mj-hero",
        "mj-accordion",
        "mj-accordion-element",
        "mj-accordion-title",
        "mj-accordion-text",
        "mj-carousel",
        "mj-carousel-image",
        "mj-html-attributes",
        "mj-html-attribute",
        "mj-selector",
    ]
)


# HTML elements that never take a closing tag, for the strict check of mj-text content.
_VOID_TAGS = frozenset(
    ["area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"]
)


class _MjmlChecker(HTMLParser):
    """Finds the first unknown, unclosed or mismatched element of generated MJML, and its line.

    By default only MJML elements are checked (HTML inside mj-text may be loose); `strict` checks
    every element, to explain an error mjml-python raised without naming a line.
    """

    def __init__(self, *, strict: bool = False) -> None:
        super().__init__(convert_charrefs=True)
        self.strict = strict
        self.stack: list[tuple[str, int]] = []
        self.problem: tuple[int, str] | None = None

    def _checked(self, tag: str) -> bool:
        is_mjml = tag == "mjml" or tag.startswith("mj-")
        return self.problem is None and (is_mjml or (self.strict and tag not in _VOID_TAGS))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if not self._checked(tag):
            return
        line = self.getpos()[0]
        if tag.startswith("mj") and tag not in _MJML_TAGS:
            self.problem = (line, f"<{tag}> is not an MJML element")
            return
        self.stack.append((tag, line))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._checked(tag) and tag.startswith("mj") and tag not in _MJML_TAGS:
            self.problem = (self.getpos()[0], f"<{tag}> is not an MJML element")

    def handle_endtag(self, tag: str) -> None:
        if not self._checked(tag):
            return
        line = self.getpos()[0]
        if not self.stack:
            self.problem = (line, f"</{tag}> closes an element that was never opened")
        elif self.stack[-1][0] != tag:
            open_tag, open_line = self.stack[-1]
            self.problem = (open_line, f"<{open_tag}> opened here is not closed before </{tag}>")
        else:
            self.stack.pop()

    def problem_in(self, source: str) -> tuple[int, str] | None:
        self.feed(source)
        self.close()
        if self.problem is None and self.stack:
            tag, line = self.stack[-1]
            self.problem = (line, f"<{tag}> opened here is never closed")
        return self.problem


_JINJA_PART = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}")


def _line_pattern(template_line: str) -> re.Pattern[str]:
    """A template line as a pattern for the output it produces: each Jinja tag matches anything."""
    pieces = _JINJA_PART.split(template_line.strip())
    return re.compile(".*?".join(re.escape(piece) for piece in pieces) + r"\Z", re.DOTALL)


def _locate_in_templates(lines: list[str], line: int, directory: Path) -> str | None:
    """The template file and line that most likely produced `line` of the generated MJML.

    Candidates are template lines whose text (Jinja tags as wildcards) matches the output line;
    the one whose neighbours also match the output's neighbours wins, which tells apart the many
    identical `<mj-column>` lines.
    """
    wanted = lines[line - 1].strip() if 0 < line <= len(lines) else ""
    if len(wanted) < 4:
        return None
    around = [text.strip() for text in lines[max(0, line - 4) : line + 3]]
    best: tuple[int, str] | None = None
    for path in sorted(directory.rglob("*.mjml.j2")):
        source = path.read_text(encoding="utf-8").splitlines()
        for index, text in enumerate(source):
            literal = _JINJA_PART.sub("", text).strip()
            if len(literal) < 4 or not _line_pattern(text).match(wanted):
                continue
            near = source[max(0, index - 3) : index + 4]
            score = sum(1 for t in near if any(_line_pattern(t).match(o) for o in around))
            if best is None or score > best[0]:
                best = (score, f"{template_path(str(path))}, line {index + 1}")
    return best[1] if best else None


def _mjml_error(mjml_source: str, directory: Path, problem: tuple[int, str]) -> TemplateError:
    line, what = problem
    lines = mjml_source.splitlines()
    origin = _locate_in_templates(lines, line, directory)
    if origin is None:
        text = lines[line - 1].strip()[:80] if 0 < line <= len(lines) else ""
        compiled = template_path(str(directory / HTML_TEMPLATE))
        origin = f"line {line} of the MJML rendered from {compiled} ({text!r})"
    return TemplateError(
        f"MJML error at {origin}: {what}. Fix that element in the template and render again."
    )


def compile_mjml(mjml_source: str, directory: Path) -> str:
    """The HTML of `mjml_source`, CSS inlined; TemplateError naming the template line at fault."""
    problem = _MjmlChecker().problem_in(mjml_source)
    if problem is not None:
        raise _mjml_error(mjml_source, directory, problem)
    inline_css = "\n".join(_INLINE_STYLE.findall(mjml_source))
    source = _INLINE_STYLE.sub("", mjml_source)
    try:
        # fonts={} keeps MJML from linking web fonts: the email uses system fonts only.
        compiled = mjml.mjml2html(source, disable_comments=True, fonts={})
    except ValueError as exc:
        problem = _MjmlChecker(strict=True).problem_in(mjml_source)
        if problem is not None:
            raise _mjml_error(mjml_source, directory, problem) from None
        origin = template_path(str(directory / HTML_TEMPLATE))
        raise TemplateError(
            f"MJML error in the MJML rendered from {origin}: "
            f"{exc}. Check the quoting of mj- element attributes in the templates."
        ) from None
    try:
        inlined = css_inline.inline(
            compiled,
            inline_style_tags=False,
            keep_style_tags=True,
            extra_css=inline_css or None,
            load_remote_stylesheets=False,
            minify_css=True,
        )
    except ValueError as exc:
        raise TemplateError(
            f"The inline CSS in {template_path(str(directory / HTML_TEMPLATE))} cannot be applied: "
            f'{exc}. Fix the mj-style inline="inline" block and render again.'
        ) from None
    return _drop_inlined_classes(inlined, set(_CSS_CLASS.findall(inline_css)))


_CSS_CLASS = re.compile(r"\.(-?[_a-zA-Z][\w-]*)")
_CLASS_ATTR = re.compile(r'\sclass="([^"]*)"')


def _drop_inlined_classes(markup: str, inlined: set[str]) -> str:
    """Remove class names whose rules now live in style attributes: bytes Gmail would count."""
    if not inlined:
        return markup

    def keep(match: re.Match[str]) -> str:
        names = [name for name in match.group(1).split() if name not in inlined]
        return f' class="{" ".join(names)}"' if names else ""

    return _CLASS_ATTR.sub(keep, markup)
