"""Turn one content variant of a digest into its subject, HTML body and plain-text body.

Jinja2 renders `templates/digest.mjml.j2` (autoescaped) into MJML, which
`digest/render/mjml_compile.py` compiles to HTML once per variant with its inline CSS applied.
The plain-text twin comes from `templates/digest.txt.j2`. Per-subscriber parts are left as `%%...%%`
tokens for the sender to fill, so a variant is compiled once however many people receive it.
"""

from __future__ import annotations

import html
import re
import textwrap
import traceback
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from markupsafe import Markup

from digest.content.frozen import DigestContent, PairCard, ToolCard
from digest.errors import ConfigError, TemplateError
from digest.http_urls import is_http_url
from digest.links import LinkTemplates
from digest.render.mjml_compile import HTML_TEMPLATE, compile_mjml, template_path
from digest.render.placeholders import (
    NAME_HTML,
    NAME_TEXT,
    PREFERENCES_URL,
    UNSUBSCRIBE_URL,
    VOTE_TOKEN,
)

TEXT_TEMPLATE = "digest.txt.j2"
TEXT_WIDTH = 72
GMAIL_CLIP_BYTES = 102 * 1024  # Gmail hides HTML beyond this behind "[Message clipped]"
# Room left under the clip for each subscriber's links, filled in at send time.
PERSONAL_LINK_BYTES = 2048

# mjml-python writes mj-title into an aria-label without escaping quotes, so the title goes in
# as this marker and the escaped subject is put in after compiling.
_TITLE_MARKER = "VERDICTDIGESTTITLEMARKER"
# MJML hides the preheader with white 1px text, which spam filters score as invisible text;
# it stays hidden (Outlook included) without either.
_PREHEADER_DIV = re.compile(r'(<body[^>]*>\s*<div style=")display:none;[^"]*(")')
_PREHEADER_STYLE = "display:none;max-height:0;max-width:0;overflow:hidden;opacity:0;mso-hide:all;"
# The colour of a panel's figures follows its verdict, never the share alone.
_STANCE_COLOURS = {"ship": "#15803d", "skip": "#b91c1c", "split": "#92400e"}


@dataclass(frozen=True)
class RenderedVariant:
    """One variant of a week's email, with the per-subscriber tokens still in place: what the
    ledger stores, the send fills in and the preview shows."""

    subject: str
    html: str
    text: str


def clipped_by_gmail(html: str) -> bool:
    """Whether Gmail would cut the HTML short once each subscriber's links are filled in,
    hiding the rest, the unsubscribe link and the postal address included."""
    return len(html.encode("utf-8")) > GMAIL_CLIP_BYTES - PERSONAL_LINK_BYTES


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
    # A macro's output (Markup) was built from values that each passed through here already.
    if isinstance(value, (_Token, Markup)) or not isinstance(value, str) or "%%" not in value:
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
        where = template_path(exc.filename or exc.name)
        raise TemplateError(
            f"Template {where}, line {exc.lineno}: {exc.message}. "
            "Fix the Jinja syntax on that line and render again."
        ) from None
    except jinja2.TemplateNotFound as exc:
        raise TemplateError(
            f"Template {exc.name!r} was not found in {template_path(str(_env_dir(env)))}. "
            "Restore the file or fix the name in the include that refers to it."
        ) from None
    except (jinja2.TemplateError, TypeError, ValueError, AttributeError) as exc:
        frame = _template_frame(exc)
        if frame is None:
            raise
        message = getattr(exc, "message", None) or str(exc)
        raise TemplateError(
            f"Template {template_path(frame[0])}, line {frame[1]}: {message}. "
            "Fix the expression on that line (the digest content has no such value) "
            "and render again."
        ) from None


def _env_dir(env: jinja2.Environment) -> Path:
    loader = env.loader
    if isinstance(loader, jinja2.FileSystemLoader) and loader.searchpath:
        return Path(loader.searchpath[0])
    return Path()


# Every MJML element name mjml-python understands; anything else is a typo in a template.
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
            "vote_token": _Token(VOTE_TOKEN),
        },
    }
    mjml_source = _render_template(env, HTML_TEMPLATE, context)
    body = compile_mjml(mjml_source, directory)
    body = body.replace(_TITLE_MARKER, html.escape(subject, quote=True))
    body = _PREHEADER_DIV.sub(lambda m: m.group(1) + _PREHEADER_STYLE + m.group(2), body, count=1)
    text = _render_template(env, TEXT_TEMPLATE, context)
    return RenderedVariant(subject=subject, html=body, text=_tidy_text(text))


def _tidy_text(text: str) -> str:
    """Trailing spaces off, at most two blank lines in a row, one final newline."""
    lines = [line.rstrip() for line in text.splitlines()]
    tidy = re.sub(r"\n{4,}", "\n\n\n", "\n".join(lines)).strip("\n")
    return tidy + "\n"
