"""Turn one content variant of a digest into its subject, HTML body and plain-text body.

Jinja2 renders `templates/digest.mjml.j2` (autoescaped) into MJML, mjml-python compiles it to
HTML once per variant, and css-inline copies the rules the template marks `inline="inline"` into
style attributes while every MJML `<style>` block (media queries included) stays as it is. The
plain-text twin comes from `templates/digest.txt.j2`. Per-subscriber parts are left as `%%...%%`
tokens for the sender to fill, so a variant is compiled once however many people receive it.
"""

from __future__ import annotations

import html
import re
import textwrap
import traceback
from dataclasses import dataclass
from functools import lru_cache
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

import css_inline
import jinja2
import mjml

from digest.content.model import DigestContent, PairCard, ToolCard
from digest.errors import ConfigError, TemplateError
from digest.http_urls import is_http_url
from digest.links import LinkTemplates
from digest.render.placeholders import NAME_HTML, NAME_TEXT, PREFERENCES_URL, UNSUBSCRIBE_URL

HTML_TEMPLATE = "digest.mjml.j2"
TEXT_TEMPLATE = "digest.txt.j2"
TEXT_WIDTH = 72
GMAIL_CLIP_BYTES = 102 * 1024  # Gmail hides HTML beyond this behind "[Message clipped]"

# mjml-python writes mj-title into an aria-label without escaping quotes, so the title goes in
# as this marker and the escaped subject is put in after compiling.
_TITLE_MARKER = "VERDICTDIGESTTITLEMARKER"
# MJML hides the preheader with white 1px text, which spam filters score as invisible text;
# it stays hidden (Outlook included) without either.
_PREHEADER_DIV = re.compile(r'(<body[^>]*>\s*<div style=")display:none;[^"]*(")')
_PREHEADER_STYLE = "display:none;max-height:0;max-width:0;overflow:hidden;opacity:0;mso-hide:all;"
# The colour of a panel's figures follows its verdict, never the share alone.
_STANCE_COLOURS = {"ship": "#15803d", "skip": "#b91c1c", "split": "#92400e"}
_INLINE_STYLE = re.compile(r"<mj-style\s+inline=\"inline\"\s*>(.*?)</mj-style>", re.DOTALL)


@dataclass(frozen=True)
class RenderedVariant:
    """One variant of a week's email, with the per-subscriber tokens still in place."""

    subject: str
    html: str
    text: str

    @property
    def html_bytes(self) -> int:
        return len(self.html.encode("utf-8"))

    @property
    def clipped_by_gmail(self) -> bool:
        """True when Gmail would cut the HTML short (and hide the footer): worth an editor flag."""
        return self.html_bytes >= GMAIL_CLIP_BYTES


class _Token(str):
    """A substitution token the templates may print as is (catalog text never is one)."""

    __slots__ = ()


def default_templates_dir() -> Path:
    """The templates folder: packaged in a wheel as digest/_templates, else the repo's."""
    package = Path(__file__).parents[1]
    packaged = package / "_templates"
    if packaged.is_dir():
        return packaged
    return package.parent / "templates"


def http_url(value: object) -> str:
    """`value` if it is an absolute http(s) URL safe to put in an href, else ""."""
    return value if isinstance(value, str) and is_http_url(value) else ""


def _unmake_tokens(value: Any) -> Any:
    """Break any `%%` in data so catalog text can never pose as a per-subscriber token."""
    if isinstance(value, _Token) or not isinstance(value, str) or "%%" not in value:
        return value
    # A zero-width space between the signs keeps the text readable and the token inert.
    return value.replace("%%", "%\u200b%")


def _wrap(value: str, width: int = TEXT_WIDTH, indent: str = "") -> str:
    """Wrap prose for the plain-text part, never splitting a long word or URL."""
    return textwrap.fill(
        " ".join(str(value).split()),
        width=width,
        initial_indent=indent,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )


@lru_cache(maxsize=8)
def _environment(directory: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("mjml.j2", "html.j2"),
            disabled_extensions=("txt.j2",),
            default_for_string=True,
            default=True,
        ),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        finalize=_unmake_tokens,
        auto_reload=True,  # a preview picks up template edits on the next render
    )
    env.filters["http_url"] = http_url
    env.filters["wrap"] = _wrap
    return env


def _site_link(site_url: str) -> Any:
    base = site_url.rstrip("/")

    def link(path: str) -> str:
        # Paths come from slugs; quoting keeps anything odd from leaving the site's origin.
        clean = "/" + quote(path.lstrip("/"), safe="/-._~")
        return base + clean

    return link


def _pair_and_tool_links(site_link: Any, templates: LinkTemplates) -> tuple[Any, Any]:
    """The templates' `compare_link(pair)` and `tool_link(tool)`, honouring the link settings."""

    def compare_link(pair: PairCard) -> str:
        return templates.compare_url(pair.a.slug, pair.b.slug) or site_link(pair.compare_path)

    def tool_link(tool: ToolCard) -> str:
        return templates.tool_url(tool.slug) or http_url(tool.url)

    return compare_link, tool_link


def _display(path: str | None) -> str:
    if not path:
        return "<unknown template>"
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return path


def _template_frame(exc: BaseException) -> tuple[str, int] | None:
    """The innermost template file and line in a render traceback (Jinja rewrites frames)."""
    found: tuple[str, int] | None = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.endswith(".j2") and frame.lineno is not None:
            found = (frame.filename, frame.lineno)
    return found


def _render_template(env: jinja2.Environment, name: str, context: dict[str, Any]) -> str:
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateSyntaxError as exc:
        where = _display(exc.filename or exc.name)
        raise TemplateError(
            f"Template {where}, line {exc.lineno}: {exc.message}. "
            "Fix the Jinja syntax on that line and render again."
        ) from None
    except jinja2.TemplateNotFound as exc:
        raise TemplateError(
            f"Template {exc.name!r} was not found in {_display(str(_env_dir(env)))}. "
            "Restore the file or fix the name in the include that refers to it."
        ) from None
    except (jinja2.TemplateError, TypeError, ValueError, AttributeError) as exc:
        frame = _template_frame(exc)
        if frame is None:
            raise
        message = getattr(exc, "message", None) or str(exc)
        raise TemplateError(
            f"Template {_display(frame[0])}, line {frame[1]}: {message}. "
            "Fix the expression on that line (the digest content has no such value) "
            "and render again."
        ) from None


def _env_dir(env: jinja2.Environment) -> Path:
    loader = env.loader
    if isinstance(loader, jinja2.FileSystemLoader) and loader.searchpath:
        return Path(loader.searchpath[0])
    return Path()


# Every MJML element name mjml-python understands; anything else is a typo in a template.
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
                best = (score, f"{_display(str(path))}, line {index + 1}")
    return best[1] if best else None


def _mjml_error(mjml_source: str, directory: Path, problem: tuple[int, str]) -> TemplateError:
    line, what = problem
    lines = mjml_source.splitlines()
    origin = _locate_in_templates(lines, line, directory)
    if origin is None:
        text = lines[line - 1].strip()[:80] if 0 < line <= len(lines) else ""
        compiled = _display(str(directory / HTML_TEMPLATE))
        origin = f"line {line} of the MJML rendered from {compiled} ({text!r})"
    return TemplateError(
        f"MJML error at {origin}: {what}. Fix that element in the template and render again."
    )


def _compile_mjml(mjml_source: str, directory: Path) -> str:
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
        raise TemplateError(
            f"MJML error in the MJML rendered from {_display(str(directory / HTML_TEMPLATE))}: "
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
            f"The inline CSS in {_display(str(directory / HTML_TEMPLATE))} cannot be applied: "
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


def _one_line(text: str) -> str:
    return " ".join(text.split())


def render_variant(
    content: DigestContent,
    *,
    site_url: str,
    postal_address: str,
    templates_dir: Path | None = None,
    link_templates: LinkTemplates | None = None,
) -> RenderedVariant:
    """Render one content variant; the result still holds the per-subscriber tokens.

    `link_templates` (DIGEST_COMPARE_URL, DIGEST_TOOL_URL) sends comparison and tool-name links
    elsewhere than the site's /compare pages and the tools' own URLs.
    """
    if not http_url(site_url):
        raise ConfigError(
            f"DIGEST_SITE_URL={site_url!r} is not an http(s) URL. "
            "Set it to the site's address, such as https://verdicts.example.com."
        )
    directory = (templates_dir or default_templates_dir()).resolve()
    env = _environment(directory)
    subject = _one_line(content.subject)
    site_link = _site_link(site_url)
    compare_link, tool_link = _pair_and_tool_links(site_link, link_templates or LinkTemplates())
    context: dict[str, Any] = {
        "content": content,
        "postal_address": postal_address,
        "site_link": site_link,
        "compare_link": compare_link,
        "tool_link": tool_link,
        "stance_colours": _STANCE_COLOURS,
        "title_marker": _Token(_TITLE_MARKER),
        "tokens": {
            "unsubscribe_url": _Token(UNSUBSCRIBE_URL),
            "preferences_url": _Token(PREFERENCES_URL),
            "name_html": _Token(NAME_HTML),
            "name_text": _Token(NAME_TEXT),
        },
    }
    mjml_source = _render_template(env, HTML_TEMPLATE, context)
    body = _compile_mjml(mjml_source, directory)
    body = body.replace(_TITLE_MARKER, html.escape(subject, quote=True))
    body = _PREHEADER_DIV.sub(lambda m: m.group(1) + _PREHEADER_STYLE + m.group(2), body, count=1)
    text = _render_template(env, TEXT_TEMPLATE, context)
    return RenderedVariant(subject=subject, html=body, text=_tidy_text(text))


def _tidy_text(text: str) -> str:
    """Trailing spaces off, at most two blank lines in a row, one final newline."""
    lines = [line.rstrip() for line in text.splitlines()]
    tidy = re.sub(r"\n{4,}", "\n\n\n", "\n".join(lines)).strip("\n")
    return tidy + "\n"
