"""The digest rendered as the tests render it, and its HTML summarised for assertions: tags with
their attributes, visible text, title and style blocks."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from digest.content.frozen import DigestContent
from digest.render.variant import RenderedVariant, render_variant
from tests.content_factories import ADDRESS, SITE


def render(content: DigestContent, **kwargs: Any) -> RenderedVariant:
    return render_variant(content, site_url=SITE, postal_address=ADDRESS, **kwargs)


@dataclass
class Parsed:
    tags: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    title: str = ""
    styles: list[str] = field(default_factory=list)

    def attrs(self, tag: str) -> list[dict[str, str]]:
        return [attrs for name, attrs in self.tags if name == tag]

    def hrefs(self) -> list[str]:
        return [attrs["href"] for attrs in self.attrs("a") if "href" in attrs]

    def visible(self) -> str:
        return " ".join(" ".join(self.text).split())


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parsed = Parsed()
        self._in: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.parsed.tags.append((tag, {k: v or "" for k, v in attrs}))
        if tag in ("title", "style"):
            self._in.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._in and self._in[-1] == tag:
            self._in.pop()

    def handle_data(self, data: str) -> None:
        if self._in and self._in[-1] == "title":
            self.parsed.title += data
        elif self._in and self._in[-1] == "style":
            self.parsed.styles.append(data)
        else:
            self.parsed.text.append(data)


def parse(html: str) -> Parsed:
    collector = _Collector()
    collector.feed(html)
    collector.close()
    return collector.parsed
