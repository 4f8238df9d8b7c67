"""The sign-up mail as a subscriber reads it: the confirmation links in its plain text."""

from __future__ import annotations

import re
from email.message import EmailMessage

SITE = "https://digest.example.com"


def confirmation_links(messages: list[EmailMessage], site: str = SITE) -> list[str]:
    links = []
    for message in messages:
        part = message.get_body(preferencelist=("plain",))
        assert part is not None
        links += re.findall(rf"{re.escape(site)}/confirm/[A-Za-z0-9_.-]+", part.get_content())
    return links
