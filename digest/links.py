"""The absolute URLs the emails and pages link to, all under DIGEST_SITE_URL, and the
List-Unsubscribe headers that carry a subscriber's own link.

Pure string building: a send of 100,000 recipients calls these 200,000 times, so a `Links` is
made once (per lane, per app, per preview) and handed to whoever builds links.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Self
from urllib.parse import quote

from digest.tokens import Purpose, TokenMaker

if TYPE_CHECKING:  # the recipient-building child process imports this module without settings
    from digest.config import Settings


@dataclass(frozen=True)
class Links:
    """Link building for one site URL and one signing key."""

    site_url: str
    key: bytes
    # Bound once per `Links` (see TokenMaker); rebuilt from the key when pickled (`__reduce__`).
    _unsubscribe: TokenMaker = field(init=False, repr=False, compare=False)
    _preferences: TokenMaker = field(init=False, repr=False, compare=False)
    _vote: TokenMaker = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_unsubscribe", TokenMaker(self.key, Purpose.UNSUBSCRIBE))
        object.__setattr__(self, "_preferences", TokenMaker(self.key, Purpose.PREFERENCES))
        object.__setattr__(self, "_vote", TokenMaker(self.key, Purpose.VOTE))

    def __reduce__(self) -> tuple[type[Self], tuple[str, bytes]]:
        return type(self), (self.site_url, self.key)

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(site_url=settings.site_url.rstrip("/"), key=settings.signing_key())

    def unsubscribe(self, subscriber_id: int) -> str:
        """The subscriber's own one-click unsubscribe URL (also the List-Unsubscribe header's)."""
        return f"{self.site_url}/unsubscribe/{self._unsubscribe(subscriber_id)}"

    def preferences(self, subscriber_id: int) -> str:
        return f"{self.site_url}/preferences/{self._preferences(subscriber_id)}"

    def vote_token(self, delivery_id: int) -> str:
        """The token of one delivery's Ship/Skip links: it votes for that email's tools only."""
        return self._vote(delivery_id)

    def vote(self, token: str, slug: str, choice: str) -> str:
        """A Ship or Skip link, as the templates write it (digest/web/votes.py serves it)."""
        return f"{self.site_url}/vote/{token}/{quote(slug, safe='')}?choice={quote(choice)}"

    def archive(self, week: str) -> str:
        """The web version of a week's digest ("view in browser")."""
        return f"{self.site_url}/archive/{quote(week, safe='')}"

    def compare(self, a: str, b: str) -> str:
        """The head-to-head page of two tools, by slug."""
        return f"{self.site_url}/compare/{quote(a, safe='')}-vs-{quote(b, safe='')}"


@dataclass(frozen=True)
class LinkTemplates:
    """Where the email's comparison and tool-name links go when they leave DIGEST_SITE_URL.

    `compare` holds `{a}` and `{b}`, `tool` holds `{slug}` (DIGEST_COMPARE_URL, DIGEST_TOOL_URL);
    None keeps the site's own /compare page and the tool's own URL. Slugs go in URL-quoted.
    """

    compare: str | None = None
    tool: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(compare=settings.compare_url, tool=settings.tool_url)

    def compare_url(self, a: str, b: str) -> str | None:
        if self.compare is None:
            return None
        return self.compare.replace("{a}", quote(a, safe="")).replace("{b}", quote(b, safe=""))

    def tool_url(self, slug: str) -> str | None:
        if self.tool is None:
            return None
        return self.tool.replace("{slug}", quote(slug, safe=""))


ONE_CLICK = "List-Unsubscribe=One-Click"


def recipient_headers(unsubscribe_url: str) -> dict[str, str]:
    """The RFC 8058 one-click unsubscribe headers every message carries."""
    return {"List-Unsubscribe": f"<{unsubscribe_url}>", "List-Unsubscribe-Post": ONE_CLICK}


def has_one_click_unsubscribe(headers: Mapping[str, str]) -> bool:
    """Both RFC 8058 headers, the first naming a web link: what the send checks on every
    message the provider accepts, so the run report can say so."""
    link = headers.get("List-Unsubscribe", "")
    one_click = headers.get("List-Unsubscribe-Post") == ONE_CLICK
    return one_click and link.startswith(("<https://", "<http://"))
