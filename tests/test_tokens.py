"""Subscriber tokens: standard HMAC-SHA256 underneath, bound to one purpose, tamper-evident."""

from __future__ import annotations

import base64
import hashlib
import hmac
import pickle
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from digest.links import Links
from digest.tokens import (
    MAX_SUBSCRIBER_ID,
    BadTokenError,
    Purpose,
    make_timed_token,
    make_token,
    read_timed_token,
    read_token,
    sign,
)
from digest.web import csrf

KEY = b"a-signing-key-for-the-tests"


def _reference_token(key: bytes, purpose: Purpose, subscriber_id: int) -> str:
    """The same token built the slow, obvious way with the standard library's hmac."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")

    payload = b64(f"{purpose.value}:{subscriber_id}".encode())
    mac = hmac.new(key, b"verdict-digest/token/" + payload.encode(), hashlib.sha256)
    return f"{payload}.{b64(mac.digest()[:18])}"


# Keys shorter than, equal to and longer than SHA-256's 64-byte block take different paths.
@given(
    key=st.binary(min_size=1, max_size=200),
    purpose=st.sampled_from(list(Purpose)),
    subscriber_id=st.integers(min_value=1, max_value=2**63 - 1),
)
def test_tokens_match_the_standard_hmac_construction(
    key: bytes, purpose: Purpose, subscriber_id: int
) -> None:
    assert make_token(key, purpose, subscriber_id) == _reference_token(key, purpose, subscriber_id)


@pytest.mark.parametrize("key", [b"k", b"x" * 64, b"y" * 65, b"z" * 200])
def test_block_sized_and_long_keys_match_too(key: bytes) -> None:
    assert make_token(key, Purpose.PREFERENCES, 7) == _reference_token(key, Purpose.PREFERENCES, 7)


@given(purpose=st.sampled_from(list(Purpose)), subscriber_id=st.integers(1, MAX_SUBSCRIBER_ID))
def test_a_token_reads_back_to_its_subscriber(purpose: Purpose, subscriber_id: int) -> None:
    assert read_token(KEY, purpose, make_token(KEY, purpose, subscriber_id)) == subscriber_id


@pytest.mark.parametrize("subscriber_id", [0, -1, MAX_SUBSCRIBER_ID + 1, 10**30])
def test_a_signed_token_for_an_id_no_table_can_hold_is_refused(subscriber_id: int) -> None:
    # Authentic but naming no possible row: refused before any database is asked.
    with pytest.raises(BadTokenError):
        read_token(KEY, Purpose.UNSUBSCRIBE, make_token(KEY, Purpose.UNSUBSCRIBE, subscriber_id))
    timed = make_timed_token(KEY, Purpose.CONFIRM, subscriber_id, issued_at=1000)
    with pytest.raises(BadTokenError):
        read_timed_token(KEY, Purpose.CONFIRM, timed, now=1000, max_age=100)


def test_a_token_for_one_purpose_never_reads_as_another() -> None:
    token = make_token(KEY, Purpose.PREFERENCES, 12)
    with pytest.raises(BadTokenError, match="another purpose"):
        read_token(KEY, Purpose.UNSUBSCRIBE, token)


def test_another_keys_token_is_refused() -> None:
    token = make_token(b"some-other-key", Purpose.UNSUBSCRIBE, 12)
    with pytest.raises(BadTokenError, match="bad signature"):
        read_token(KEY, Purpose.UNSUBSCRIBE, token)


def test_any_single_changed_character_is_refused() -> None:
    token = make_token(KEY, Purpose.UNSUBSCRIBE, 12345)
    for position, original in enumerate(token):
        replacement = "A" if original != "A" else "B"
        altered = token[:position] + replacement + token[position + 1 :]
        with pytest.raises(BadTokenError):
            read_token(KEY, Purpose.UNSUBSCRIBE, altered)


@pytest.mark.parametrize("garbage", ["", ".", "abc", "abc.", ".abc", "a.b.c"])
def test_malformed_tokens_are_refused(garbage: str) -> None:
    with pytest.raises(BadTokenError):
        read_token(KEY, Purpose.UNSUBSCRIBE, garbage)


@pytest.mark.parametrize(
    "garbage",
    [
        "a.\u00e9",
        "\u00e9.abc",
        "abc.d\u00e9f",
        "abc.de\n",
        "a b.cd",
        "abc.de=",
        "ab\x00.cd",
        "+/.ab",
    ],
)
def test_non_ascii_or_non_base64url_tokens_are_refused_not_crashed(garbage: str) -> None:
    # A token holding anything but base64url text is a BadTokenError, never a TypeError (a 500).
    with pytest.raises(BadTokenError, match="malformed"):
        read_token(KEY, Purpose.UNSUBSCRIBE, garbage)


def test_a_non_ascii_signature_on_a_real_payload_is_refused() -> None:
    # The real payload with a non-ASCII signature reaches no comparison that could raise.
    payload = make_token(KEY, Purpose.UNSUBSCRIBE, 5).partition(".")[0]
    with pytest.raises(BadTokenError):
        read_token(KEY, Purpose.UNSUBSCRIBE, f"{payload}.\u00e9\u00e9\u00e9")


@given(
    key=st.binary(min_size=1, max_size=200),
    domain=st.binary(max_size=40),
    message=st.binary(max_size=200),
)
def test_the_signer_is_standard_hmac_sha256_over_domain_and_message(
    key: bytes, domain: bytes, message: bytes
) -> None:
    # The cached keyed state copied per message gives exactly what a fresh hmac.new gives.
    expected = hmac.new(key, domain + message, hashlib.sha256).digest()
    assert sign(key, domain=domain, message=message) == expected
    assert sign(key, domain=domain, message=message) == expected


def test_csrf_values_are_signed_by_the_same_signer() -> None:
    # A CSRF field is `nonce.signature`, HMAC-SHA256 over its own domain, the page token and nonce.
    nonce = csrf.new_nonce()
    mac = hmac.new(KEY, f"verdict-digest/csrf/page-token/{nonce}".encode(), hashlib.sha256)
    signature = base64.urlsafe_b64encode(mac.digest()[:18]).decode("ascii")
    value = csrf.field_value(KEY, "page-token", nonce)
    assert value == f"{nonce}.{signature}"
    assert csrf.is_valid(KEY, "page-token", nonce, value)
    assert not csrf.is_valid(KEY, "other-page", nonce, value)


def test_a_timed_confirm_token_expires_and_its_time_cannot_be_altered() -> None:
    # The issue time is signed with the rest: an old token is expired, an edited one is forged.
    from digest.tokens import ExpiredTokenError, make_timed_token, read_timed_token

    key = b"k" * 32
    token = make_timed_token(key, Purpose.CONFIRM, 42, issued_at=1_000_000)
    assert read_timed_token(key, Purpose.CONFIRM, token, now=1_000_100, max_age=3600) == 42
    with pytest.raises(ExpiredTokenError):
        read_timed_token(key, Purpose.CONFIRM, token, now=1_000_000 + 3601, max_age=3600)
    later = make_timed_token(key, Purpose.CONFIRM, 42, issued_at=2_000_000)
    forged = later.split(".")[0] + "." + token.split(".")[1]
    with pytest.raises(BadTokenError):
        read_timed_token(key, Purpose.CONFIRM, forged, now=2_000_000, max_age=3600)
    with pytest.raises(BadTokenError):
        read_token(key, Purpose.CONFIRM, token)  # an untimed reader never accepts it
    with pytest.raises(ExpiredTokenError):
        read_timed_token(
            key, Purpose.CONFIRM, make_token(key, Purpose.CONFIRM, 42), now=0, max_age=3600
        )


def test_signing_is_hmac_sha256_over_the_domain_and_the_message() -> None:
    # Tokens are signed from precomputed HMAC states for speed: the result must be HMAC itself,
    # for keys shorter and longer than SHA-256's block, and any message.
    import hashlib
    import hmac
    import random

    from digest.tokens import sign

    rng = random.Random(2026)
    for length in (1, 16, 63, 64, 65, 200):
        key = bytes(rng.randrange(256) for _ in range(length))
        for size in (0, 1, 40, 300):
            message = bytes(rng.randrange(256) for _ in range(size))
            expected = hmac.new(key, b"domain/" + message, hashlib.sha256).digest()
            assert sign(key, domain=b"domain/", message=message) == expected


def test_links_sign_the_standard_tokens_also_after_crossing_a_pipe() -> None:
    """`Links` binds its signers once; pickled (as the building process receives it), it
    rebuilds them from the key, and both sign exactly what `make_token` signs."""
    links = Links(site_url="https://digest.example", key=KEY)
    for current in (links, pickle.loads(pickle.dumps(links))):  # noqa: S301 (our own bytes)
        assert current.unsubscribe(42).rsplit("/", 1)[1] == _reference_token(
            KEY, Purpose.UNSUBSCRIBE, 42
        )
        assert current.preferences(7).rsplit("/", 1)[1] == _reference_token(
            KEY, Purpose.PREFERENCES, 7
        )
        assert current.vote_token(MAX_SUBSCRIBER_ID) == _reference_token(
            KEY, Purpose.VOTE, MAX_SUBSCRIBER_ID
        )


@pytest.mark.parametrize("held", ["", "   \n", "short"])
def test_a_development_secret_too_short_to_sign_is_refused(
    held: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An emptied secret file signed every link with an empty key, which anyone can do too.
    from digest.config import DEV_SECRET_FILE, Settings
    from digest.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DIGEST_SECRET_KEY", raising=False)
    (tmp_path / DEV_SECRET_FILE).write_text(held, encoding="utf-8")
    with pytest.raises(ConfigError, match="too few to sign links"):
        Settings().signing_key()
