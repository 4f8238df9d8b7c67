"""The app's HTML pages: Jinja2 templates with autoescaping, and one inline stylesheet.

Every value a template prints is escaped unless the template says otherwise, which only the
stylesheet (our own file) does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from starlette.responses import HTMLResponse

from digest.config import Settings
from digest.http_urls import is_http_url

TEMPLATES = Path(__file__).parent / "templates"


def _http_only(url: str) -> str:
    """A configured link shown only if it is http(s); anything else becomes the site root."""
    return url if is_http_url(url) else "/"


class Pages:
    """Renders the templates with the site's name, address and stylesheet."""

    def __init__(self, settings: Settings) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            # The plain-text email part is the one template that is not HTML.
            autoescape=jinja2.select_autoescape(disabled_extensions=("txt",), default=True),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.css = (TEMPLATES / "site.css").read_text(encoding="utf-8")
        self.globals: dict[str, Any] = {
            "site_name": settings.from_name,
            "site_url": _http_only(settings.site_url),
            "postal_address": settings.postal_address,
            "contact_email": settings.from_email,
            "css": self.css,
        }

    def text(self, name: str, **context: Any) -> str:
        return self.env.get_template(name).render({**self.globals, **context})

    def render(
        self,
        name: str,
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        return HTMLResponse(self.text(name, **context), status_code=status, headers=headers)

    def message(
        self,
        *,
        title: str,
        lines: list[str],
        status: int = 200,
        link: tuple[str, str] | None = None,
    ) -> HTMLResponse:
        """A page that says something and offers at most one link onward."""
        return self.render("message.html", status=status, title=title, lines=lines, link=link)

    def bad_link(self) -> HTMLResponse:
        """The one answer to a forged, altered, expired or wrong-purpose link."""
        return self.message(
            title="This link is not valid",
            lines=[
                "The link may have been cut short or changed when it was copied.",
                "Open it again from the email it came in, or copy the whole address.",
            ],
            status=400,
        )
