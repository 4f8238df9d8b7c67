"""Which link of a week's email a click followed: a comparison, a tool, a vote or the archive.

Clicks come from two places, and each link is counted by one of them only. Links to the pages of
`digest web` (Ship/Skip, the comparison pages, the archive) carry the delivery's token and stay
out of the provider's click tracking: `digest web` records their visits itself (visits.py).
Links elsewhere (a tool's site, the comparison site's own pages when DIGEST_COMPARE_URL is set)
are rewritten by the provider's click tracking, whose click events carry the URL followed; this
module maps that URL back to the link of the email it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Self
from urllib.parse import unquote, urlsplit

from digest.content.frozen import DigestContent, PairCard
from digest.engagement.visits import LinkKind
from digest.http_urls import is_http_url
from digest.links import LinkTemplates


def pair_key(pair: PairCard) -> str:
    """A pair's name in click records: its comparison page's "<a>-vs-<b>"."""
    return f"{pair.a.slug}-vs-{pair.b.slug}"


@dataclass(frozen=True)
class EmailLinks:
    """The links one week's email carries, to tell which one a click followed."""

    site_url: str
    # Links off our site, as the email wrote them and without their query: what they lead to.
    elsewhere: dict[str, tuple[LinkKind, str]] = field(default_factory=dict)

    @classmethod
    def of(cls, content: DigestContent, *, site_url: str, templates: LinkTemplates) -> Self:
        """The links of every variant of the week's email, built as the renderer builds them."""
        links: list[tuple[str, tuple[LinkKind, str]]] = []
        for pair in content.pairs:
            compare = templates.compare_url(pair.a.slug, pair.b.slug)
            if compare:
                links.append((compare, (LinkKind.COMPARISON, pair_key(pair))))
        tools = [card for pair in content.pairs for card in (pair.a, pair.b)]
        for card in [*tools, *content.also_new]:
            url = templates.tool_url(card.slug) or (card.url if is_http_url(card.url or "") else "")
            if url:
                links.append((url, (LinkKind.TOOL, card.slug)))
        elsewhere: dict[str, tuple[LinkKind, str]] = {}
        for url, meaning in links:  # exact addresses first, so they win over a bare one
            elsewhere.setdefault(url, meaning)
        for url, meaning in links:
            elsewhere.setdefault(_bare(url), meaning)
        return cls(site_url=site_url.rstrip("/"), elsewhere=elsewhere)

    def classify(self, url: str) -> tuple[LinkKind, str]:
        """(kind, target) of a followed URL: the pair, tool slug or week it led to."""
        own = self._own(url)
        if own is not None:
            return own
        found = self.elsewhere.get(url) or self.elsewhere.get(_bare(url))
        return found or (LinkKind.OTHER, url[:300])

    def _own(self, url: str) -> tuple[LinkKind, str] | None:
        """A link to our own site (a provider that tracked it anyway): read from its path."""
        if not url.startswith(self.site_url + "/"):
            return None
        parts = [unquote(p) for p in urlsplit(url[len(self.site_url) :]).path.split("/")[1:]]
        if len(parts) == 3 and parts[0] == "vote":
            return LinkKind.VOTE, parts[2]
        if len(parts) == 2 and parts[0] == "compare":
            return LinkKind.COMPARISON, parts[1]
        if len(parts) == 2 and parts[0] == "archive":
            return LinkKind.ARCHIVE, parts[1]
        return None


def _bare(url: str) -> str:
    """The URL without query and fragment: a provider may add its own parameters (analytics)."""
    return url.split("#", 1)[0].split("?", 1)[0]
