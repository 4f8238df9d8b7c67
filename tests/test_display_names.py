"""Display names survive every way of sending: one address, the exact name, back from the wire.

The outbox's files are parsed back with the standard parser (policy.default); SendGrid's side is
checked on the request body the fake SendGrid received, unquoted as RFC 5322 says.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from email import message_from_bytes, policy
from pathlib import Path

import pytest

from digest.send.base import OutgoingBatch, Recipient
from digest.send.outbox import OutboxBackend
from tests.fakes.fake_sendgrid import FakeSendGrid
from tests.support.sendgrid_backend import API_KEY, make_backend

NAMES = [
    "Zoë O'Brien, PhD",
    'Jane "JD" Doe',
    "Back\\slash, Bob",
    "Doe; Jane <admin@example.com>",
    "שרה כהן, ד״ר",
    "مريم (Maryam)",
    "Rocket 🚀 Rita, Esq.",
    "Ame\u0301lie Mu\u0308ller",
    "Dr. A. Smith @ Home: [team]",
]


def _batch(names: list[str], from_name: str = "Verdict Digest, Weekly") -> OutgoingBatch:
    recipients = [
        Recipient(
            delivery_id=i + 1,
            email=f"reader{i}@example.com",
            name=name,
            substitutions={},
            headers={},
        )
        for i, name in enumerate(names)
    ]
    return OutgoingBatch(
        digest_id=7,
        week="2026-W47",
        subject="Names",
        html="<p>Hello</p>",
        text="Hello",
        recipients=recipients,
        from_email="digest@verdicts.example.com",
        from_name=from_name,
    )


def test_every_written_message_names_one_recipient_exactly(tmp_path: Path) -> None:
    # A name with a comma, quote, backslash, RTL text, emoji or combining mark stays one address.
    OutboxBackend(tmp_path).send_batch(_batch(NAMES))
    seen: dict[str, str] = {}
    for path in sorted((tmp_path / "2026-W47").glob("*.eml")):
        parsed = message_from_bytes(path.read_bytes(), policy=policy.default)
        to = parsed["To"].addresses
        assert len(to) == 1, (path.name, parsed["To"])
        seen[to[0].addr_spec] = to[0].display_name
        sender = parsed["From"].addresses
        assert [(a.display_name, a.addr_spec) for a in sender] == [
            ("Verdict Digest, Weekly", "digest@verdicts.example.com")
        ]
    assert seen == {f"reader{i}@example.com": name for i, name in enumerate(NAMES)}


def test_a_name_with_a_line_break_cannot_add_a_header(tmp_path: Path) -> None:
    # A newline in a name is folded to a space: no Bcc header can be smuggled in.
    OutboxBackend(tmp_path).send_batch(_batch(["Eve\r\nBcc: victim@example.com"]))
    (path,) = (tmp_path / "2026-W47").glob("*.eml")
    parsed = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert parsed["Bcc"] is None
    assert [a.display_name for a in parsed["To"].addresses] == ["Eve Bcc: victim@example.com"]


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeSendGrid]:
    with FakeSendGrid(API_KEY, record_path=tmp_path / "record.jsonl") as server:
        yield server


_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"\Z', re.DOTALL)


def _unquote(value: str) -> str:
    """The name an RFC 5322 reader takes from a to.name: a quoted-string loses its escapes."""
    match = _QUOTED.match(value)
    return re.sub(r"\\(.)", r"\1", match.group(1)) if match else value


def test_sendgrid_gets_every_name_exactly_and_delivers_it(fake: FakeSendGrid) -> None:
    # Quotes and backslashes are escaped, not deleted: SendGrid writes the exact name.
    backend, _ = make_backend(fake.url)
    backend.send_batch(_batch(NAMES))
    assert fake.dropped == []
    got = {m.to: m.name for m in fake.accepted}
    assert {to: _unquote(name or "") for to, name in got.items()} == {
        f"reader{i}@example.com": name for i, name in enumerate(NAMES)
    }
    for name in got.values():
        assert name is not None
        bare = name[1:-1] if _QUOTED.match(name) else name
        # Inside the quotes every quote is escaped; outside them no special is left bare.
        assert not re.search(r'(?<!\\)"', re.sub(r"\\\\", "", bare))


# Names as some exports write them, RFC 2047 encoded words: each is shown as the text it
# encodes, quoted as that text needs, and stays one mailbox.
ENCODED = {
    "=?utf-8?q?Boss_=3Cattacker=40evil=2Ecom=3E=2C?=": "Boss <attacker@evil.com>,",
    "=?utf-8?b?PHNjcmlwdD4=?= encoded": "<script> encoded",
    "=?utf-8?q?Zo=C3=AB?= =?utf-8?q?_O=27Brien=2C_PhD?=": "Zoë O'Brien, PhD",
    # Encoded twice: decoded twice, not left for a parser to decode after quoting.
    "=?utf-8?q?=3D=3Futf-8=3Fq=3FEve=5F=3D3Ce=3D40evil=3D2Ecom=3D3E=3F=3D?=": "Eve <e@evil.com>",
    # A line break it decodes to is a space, as in a name typed with one: no header added.
    "=?utf-8?q?a=0D=0ABcc:_victim@example.org?=": "a  Bcc: victim@example.org",
}


def test_an_encoded_word_in_a_name_cannot_add_a_recipient(tmp_path: Path) -> None:
    # Python's header parser decoded a word after the name's quoting was decided: the first of
    # these wrote `To: Boss <attacker@evil.com>, <reader0@example.com>`, two mailboxes.
    OutboxBackend(tmp_path).send_batch(_batch(list(ENCODED)))
    seen: dict[str, str] = {}
    for path in sorted((tmp_path / "2026-W47").glob("*.eml")):
        parsed = message_from_bytes(path.read_bytes(), policy=policy.default)
        (to,) = parsed["To"].addresses
        seen[to.addr_spec] = to.display_name
        assert parsed["Bcc"] is None
    assert seen == {f"reader{i}@example.com": name for i, name in enumerate(ENCODED.values())}


def test_sendgrid_gets_an_encoded_name_as_the_text_it_shows(fake: FakeSendGrid) -> None:
    backend, _ = make_backend(fake.url)
    backend.send_batch(_batch(list(ENCODED)))
    got = {m.to: _unquote(m.name or "") for m in fake.accepted}
    assert got == {f"reader{i}@example.com": name for i, name in enumerate(ENCODED.values())}
