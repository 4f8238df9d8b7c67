"""Subscriber addresses: one validator for every way in, one key that never merges mailboxes."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from digest.audience.addresses import AddressError, clean_address, clean_display_name, email_key
from digest.audience.csv_files import import_subscribers
from digest.audience.lifecycle import SubscriptionError, request_subscription
from digest.config import Settings
from digest.db import get_engine, session_scope
from digest.errors import ImportFileError
from tests.support.factories import write_subscribers

KELVIN_SIGN = "\u212a"


@pytest.mark.parametrize(
    ("unusual", "plain"),
    [
        (f"{KELVIN_SIGN}ate@example.com", "kate@example.com"),
        ("\u017fteve@example.com", "steve@example.com"),
        ("stra\u00dfe@example.com", "strasse@example.com"),
        ("\uff41da@example.com", "ada@example.com"),
    ],
)
def test_distinct_mailboxes_never_share_a_key(unusual: str, plain: str) -> None:
    # Unicode case folding or compatibility mapping would merge these; the key keeps them apart.
    assert email_key(unusual) != email_key(plain)


def test_the_case_of_the_domain_and_of_ascii_letters_does_not_matter() -> None:
    # Ada@Example.COM and ada@example.com are one subscriber.
    assert email_key("Ada@Example.COM") == email_key("ada@example.com") == "ada@example.com"
    assert email_key("  ADA@example.com ") == "ada@example.com"


def test_an_internationalised_domain_has_one_key_in_either_spelling() -> None:
    # The domain is keyed in its IDNA (ASCII) form, as the validator normalises it.
    assert email_key("a@B\u00fccher.de") == email_key("a@xn--bcher-kva.de") == "a@xn--bcher-kva.de"


@given(st.emails())
def test_ascii_addresses_keep_the_keys_stored_before(address: str) -> None:
    # Keys already stored were made by casefold(); for ASCII addresses the rule gives the same.
    assert email_key(address) == address.strip().casefold()


@given(st.text())
def test_the_key_takes_any_text_and_never_raises(text: str) -> None:
    # Provider events may carry anything in their email field.
    assert isinstance(email_key(text), str)


@given(st.emails())
def test_a_cleaned_address_has_the_key_of_what_was_typed(address: str) -> None:
    # Storing the normalised address never moves a subscriber to another key.
    try:
        cleaned = clean_address(address)
    except AddressError:
        return
    assert email_key(cleaned) == email_key(address)


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("  Ada@EXAMPLE.com ", "Ada@example.com"),
        ("a@B\u00fccher.de", "a@xn--bcher-kva.de"),
        ("o'brien+digest@example.org", "o'brien+digest@example.org"),
    ],
)
def test_addresses_are_stored_as_the_library_normalises_them_in_ascii(
    typed: str, stored: str
) -> None:
    # Domain lower-cased and in IDNA form, local part as typed: what the mail builder can write.
    assert clean_address(typed) == stored


@pytest.mark.parametrize(
    ("typed", "reason"),
    [
        ("", "empty"),
        ("a(b)@example.com", "invalid characters"),
        ("Ada <ada@example.com>", "display name"),
        ("ada@example.com\r\nBcc: all@example.com", "control characters"),
        ("ada\t@example.com", "control characters"),
        ("stra\u00dfe@example.com", "non-ASCII"),
        (f"{KELVIN_SIGN}ate@example.com", "non-ASCII"),
        ("ada@localhost", "after the @-sign"),
        ("ada@@example.com", "@"),
        ("a" * 250 + "@example.com", "too long"),
    ],
)
def test_unusable_addresses_are_refused_with_a_reason_and_a_fix(typed: str, reason: str) -> None:
    # The message says what is wrong with the address and what to write instead.
    with pytest.raises(AddressError) as caught:
        clean_address(typed)
    assert reason in caught.value.reason
    assert "such as ada@example.com" in str(caught.value)


def test_display_names_with_line_breaks_or_controls_are_refused() -> None:
    # A name goes into the To header: a line break in it would start a header of its own.
    for name in ["Ada\r\nBcc: all@example.com", "Ada\x00", "Ada\u2028Lovelace"]:
        with pytest.raises(AddressError, match="control characters"):
            clean_display_name(name)
    assert clean_display_name("  Lovelace, Ada ") == "Lovelace, Ada"
    assert clean_display_name("  ") is None


@pytest.mark.parametrize(
    "address",
    ["a(b)@example.com", "stra\u00dfe@example.com", "Ada <ada@example.com>", "x@y"],
)
def test_the_csv_import_and_the_sign_up_form_refuse_the_same_addresses(
    settings: Settings, tmp_path: Path, address: str
) -> None:
    # One validator: no address gets in through the file that the form would refuse, or back.
    engine = get_engine(settings.database_url)
    path = write_subscribers(tmp_path / "s.csv", [{"email": address}])
    with (
        pytest.raises(ImportFileError, match="line 2: field email"),
        session_scope(engine) as session,
    ):
        import_subscribers(session=session, path=path)
    with (
        pytest.raises(SubscriptionError, match="not an email address"),
        session_scope(engine) as session,
    ):
        request_subscription(
            session=session, email=address, categories=[], ip=None, form_version="t"
        )


def test_the_csv_import_and_the_sign_up_form_store_the_same_address(
    settings: Settings, tmp_path: Path
) -> None:
    # The same typed address becomes the same stored address and key whichever way it came in.
    engine = get_engine(settings.database_url)
    path = write_subscribers(tmp_path / "s.csv", [{"email": "Ada@B\u00fccher.DE"}])
    with session_scope(engine) as session:
        import_subscribers(session=session, path=path)
    with session_scope(engine) as session:
        signed_up = request_subscription(
            session=session, email="ADA@b\u00fccher.de", categories=[], ip=None, form_version="t"
        )
        assert (signed_up.email, signed_up.email_key) == (
            "Ada@xn--bcher-kva.de",
            "ada@xn--bcher-kva.de",
        )
