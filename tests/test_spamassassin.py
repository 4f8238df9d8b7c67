"""The rendered digest, as a complete message, passes SpamAssassin's local rules.

Each digest is judged twice: assembled here with the standard library's `email` package (the
rendering on its own: multipart/alternative, text then HTML, RFC 8058 unsubscribe headers), and
built by `digest.messages.build_message`, byte for byte what the outbox would write.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, make_msgid

import pytest

from digest.content.frozen import DigestContent
from digest.render.placeholders import (
    PREFERENCES_URL,
    UNSUBSCRIBE_URL,
    VOTE_TOKEN,
    greeting_substitutions,
    subscriber_substitutions,
)
from digest.render.variant import render_variant
from digest.send.base import OutgoingBatch, Recipient, substitute
from digest.send.messages import build_message as build_outgoing_message
from tests.content_factories import ADDRESS, SITE, make_content

SPAMASSASSIN = shutil.which("spamassassin") or "/usr/bin/spamassassin"
MAX_SCORE = 2.0
UNSUBSCRIBE = f"{SITE}/unsubscribe/MTIzNDU.q7Fh2kPzXw9bL0sT4nVd"
PREFERENCES = f"{SITE}/preferences/MTIzNDU.Zr8mYc1QaTe6uHj3WkGp"
VOTE = "dm90ZToxMjM0NQ.Lk3pQw8ZrT5mNc2VxHy7bJd0"
SENT_AT = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def build_message(content: DigestContent) -> bytes:
    rendered = render_variant(content, site_url=SITE, postal_address=ADDRESS)
    personal = {
        "unsubscribe_url": UNSUBSCRIBE,
        "preferences_url": PREFERENCES,
        "name": "Ada Lovelace",
        "vote_token": VOTE,
    }
    message = EmailMessage()
    message["From"] = formataddr(("Verdict Digest", "digest@verdicts.example.com"))
    message["To"] = formataddr(("Ada Lovelace", "ada@example.org"))
    message["Subject"] = rendered.subject
    message["Date"] = format_datetime(SENT_AT)
    message["Message-ID"] = make_msgid(
        idstring="digest-2026-W47-12345", domain="verdicts.example.com"
    )
    message["MIME-Version"] = "1.0"
    message["List-Unsubscribe"] = f"<{UNSUBSCRIBE}>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    message.set_content(substitute(rendered.text, subscriber_substitutions(**personal)))
    message.add_alternative(
        substitute(rendered.html, subscriber_substitutions(**personal)), subtype="html"
    )
    return bytes(message)


def build_with_project_builder(content: DigestContent) -> bytes:
    rendered = render_variant(content, site_url=SITE, postal_address=ADDRESS)
    recipient = Recipient(
        delivery_id=12345,
        email="ada@example.org",
        name="Ada Lovelace",
        substitutions={
            UNSUBSCRIBE_URL: UNSUBSCRIBE,
            PREFERENCES_URL: PREFERENCES,
            **greeting_substitutions("Ada Lovelace"),
            VOTE_TOKEN: VOTE,
        },
        headers={
            "List-Unsubscribe": f"<{UNSUBSCRIBE}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )
    batch = OutgoingBatch(
        digest_id=7,
        week=content.week,
        subject=rendered.subject,
        html=rendered.html,
        text=rendered.text,
        recipients=[recipient],
        from_email="digest@verdicts.example.com",
        from_name="Verdict Digest",
    )
    return bytes(build_outgoing_message(batch, recipient, now=SENT_AT))


def spam_report(raw: bytes) -> tuple[float, str]:
    # -L: local tests only (no network lookups); -t: report on the message, do not filter it.
    result = subprocess.run(
        [SPAMASSASSIN, "-L", "-t"], input=raw, capture_output=True, timeout=120, check=True
    )
    report = result.stdout.decode("utf-8", "replace")
    found = re.search(r"^X-Spam-Status: \w+, score=(-?\d+(?:\.\d+)?)", report, re.MULTILINE)
    assert found, "SpamAssassin printed no X-Spam-Status header"
    details = report[report.find("Content analysis details") :]
    return float(found.group(1)), details


@pytest.mark.parametrize(
    "builder",
    [
        pytest.param(build_message, id="stdlib-builder"),
        pytest.param(build_with_project_builder, id="project-builder"),
    ],
)
@pytest.mark.parametrize(
    "content",
    [
        pytest.param(make_content(pairs=8, also_new=3), id="eight-pairs"),
        pytest.param(make_content(pairs=1, also_new=0), id="one-pair"),
        pytest.param(make_content(pairs=0, also_new=3, categories=["Writing"]), id="only-new"),
    ],
)
def test_digest_scores_under_two_with_local_spamassassin_rules(
    content: DigestContent, builder: Callable[[DigestContent], bytes]
) -> None:
    # A digest that looks like spam to filters is not delivered, whatever its content.
    raw = builder(content)
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in raw
    score, details = spam_report(raw)
    print(f"SpamAssassin score {score}\n{details}")
    assert score < MAX_SCORE, details
