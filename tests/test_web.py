"""The subscriber-facing web app through HTTP, on a real database (SQLite and PostgreSQL).

Requests go through Starlette's TestClient (httpx) to the app `digest web` serves; emails go
through a memory backend handed to the app, which builds each message exactly as the outbox
would and keeps it in the test's own list.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.engine import Engine
from starlette.testclient import TestClient

from digest.audience.lifecycle import CONFIRMATION_COOLDOWN
from digest.config import Settings, get_settings
from digest.db import get_engine
from digest.links import Links
from digest.models import Subscriber
from digest.send.base import EmailBackend
from digest.send.memory import MemoryBackend
from digest.tokens import Purpose, make_timed_token, make_token, read_timed_token
from digest.web import csrf
from digest.web.app import create_app
from tests.content_factories import make_content, make_pair
from tests.content_factories import make_tool as make_tool_card
from tests.fakes.fake_sendgrid import FakeSendGrid, Fault
from tests.support.sendgrid_env import send_through
from tests.support.signup_mail import SITE, confirmation_links
from tests.support.web_rows import (
    make_digest,
    make_subscriber,
    make_tool,
    status_of,
    subscriber_row,
)

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}

# --- builders ------------------------------------------------------------------------------------


def _links(settings: Settings) -> Links:
    return Links(site_url=settings.site_url.rstrip("/"), key=settings.signing_key())


def unsubscribe_url(settings: Settings, subscriber_id: int) -> str:
    return _links(settings).unsubscribe(subscriber_id)


def preferences_url(settings: Settings, subscriber_id: int) -> str:
    return _links(settings).preferences(subscriber_id)


def confirm_url(settings: Settings, subscriber_id: int, *, issued_at: float | None = None) -> str:
    """A confirmation link as the sign-up mail carries it: timed, issued now unless told."""
    stamp = int(time.time() if issued_at is None else issued_at)
    token = make_timed_token(
        settings.signing_key(), Purpose.CONFIRM, subscriber_id, issued_at=stamp
    )
    return f"{settings.site_url}/confirm/{token}"


def path_of(url: str) -> str:
    assert url.startswith(SITE + "/")
    return url[len(SITE) :]


def token_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def forge_valid_csrf(client: TestClient, settings: Settings, token: str) -> str:
    """A correct CSRF cookie and field for the page of `token`, as its own page would give."""
    nonce = csrf.new_nonce()
    client.cookies.set(csrf.COOKIE_NAME, nonce)
    return csrf.field_value(settings.signing_key(), token, nonce)


def csrf_from(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, "the page has no CSRF field"
    return match.group(1)


# --- fixtures ------------------------------------------------------------------------------------


class RecordingBackends:
    """A backend factory for `create_app`: memory backends that keep mail and settings here."""

    def __init__(self) -> None:
        self.sent: list[EmailMessage] = []
        self.asked: list[tuple[Settings, bool]] = []

    def __call__(self, settings: Settings, *, interactive: bool = False) -> EmailBackend:
        self.asked.append((settings, interactive))
        return MemoryBackend(sent=self.sent)


@pytest.fixture
def web_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The shared test settings (schema created), with the test site's address."""
    monkeypatch.setenv("DIGEST_SITE_URL", SITE)
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture
def engine(web_settings: Settings) -> Engine:
    return get_engine(web_settings.database_url)


@pytest.fixture
def backends() -> RecordingBackends:
    return RecordingBackends()


@pytest.fixture
def sent(backends: RecordingBackends) -> list[EmailMessage]:
    """Every message the app sent in this test, in order."""
    return backends.sent


class SettledClient(TestClient):
    """A TestClient that waits after each request for the mail the app queued to be tried."""

    def request(self, *args: Any, **kwargs: Any) -> Any:
        response = super().request(*args, **kwargs)
        self.app.state.confirmation_mailer.wait_idle()  # type: ignore[attr-defined]
        return response


@pytest.fixture
def client(web_settings: Settings, backends: RecordingBackends) -> Iterator[TestClient]:
    app = create_app(web_settings, backend_factory=backends)
    with SettledClient(app, base_url=SITE, follow_redirects=False) as c:
        yield c


# --- unsubscribe ---------------------------------------------------------------------------------


def test_one_click_post_unsubscribes_at_once(
    client: TestClient, engine: Engine, web_settings: Settings
) -> None:
    # RFC 8058: the provider's POST with List-Unsubscribe=One-Click unsubscribes with no other step.
    sid = make_subscriber(engine)
    url = unsubscribe_url(web_settings, sid)
    response = client.post(path_of(url), data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    assert status_of(engine, sid) == "unsubscribed"


def test_one_click_post_works_as_multipart_and_without_cookies(
    client: TestClient, engine: Engine, web_settings: Settings
) -> None:
    # Some mailbox providers post multipart/form-data; no cookie or CSRF value is ever needed.
    sid = make_subscriber(engine)
    client.cookies.clear()
    response = client.post(
        path_of(unsubscribe_url(web_settings, sid)),
        files={"List-Unsubscribe": (None, "One-Click")},
    )
    assert response.status_code == 200
    assert status_of(engine, sid) == "unsubscribed"


def test_a_garbled_post_to_the_unsubscribe_url_still_unsubscribes(
    client: TestClient, engine: Engine, web_settings: Settings
) -> None:
    # A POST here means "unsubscribe" even when its form encoding cannot be read.
    sid = make_subscriber(engine)
    response = client.post(
        path_of(unsubscribe_url(web_settings, sid)),
        content=b"--nope\r\nnot really multipart",
        headers={"Content-Type": "multipart/form-data; boundary=missing"},
    )
    assert response.status_code == 200
    assert status_of(engine, sid) == "unsubscribed"


def test_get_on_the_unsubscribe_url_never_unsubscribes(
    client: TestClient, engine: Engine, web_settings: Settings
) -> None:
    # Link scanners prefetch GETs: a GET shows a button that POSTs and changes nothing.
    sid = make_subscriber(engine)
    path = path_of(unsubscribe_url(web_settings, sid))
    for _ in range(3):
        page = client.get(path)
        assert page.status_code == 200
        assert re.search(rf'<form method="post" action="{re.escape(path)}">', page.text)
        assert "Verdict Digest" in page.text
    assert status_of(engine, sid) == "active"


def test_unsubscribe_button_then_resubscribe_button(
    client: TestClient, engine: Engine, web_settings: Settings
) -> None:
    # The page's own button unsubscribes and offers to come back, which works with its CSRF value.
    sid = make_subscriber(engine)
    path = path_of(unsubscribe_url(web_settings, sid))
    client.get(path)
    done = client.post(path, data={"action": "unsubscribe"})
    assert done.status_code == 200
    assert "You are unsubscribed" in done.text
    assert status_of(engine, sid) == "unsubscribed"

    back = client.post(path, data={"action": "resubscribe", "csrf": csrf_from(done.text)})
    assert back.status_code == 200
    assert "You are subscribed again" in back.text
    assert status_of(engine, sid) == "active"


def test_resubscribe_without_a_valid_csrf_value_is_refused(
    client: TestClient, engine: Engine, web_settings: Settings
) -> None:
    # Bringing mail back needs the page's CSRF value and cookie: a cross-site POST cannot.
    sid = make_subscriber(engine, status="unsubscribed")
    path = path_of(unsubscribe_url(web_settings, sid))
    assert client.post(path, data={"action": "resubscribe"}).status_code == 403
    page = client.get(path)
    value = csrf_from(page.text)
    client.cookies.clear()
    assert client.post(path, data={"action": "resubscribe", "csrf": value}).status_code == 403
    assert status_of(engine, sid) == "unsubscribed"


def test_unsubscribing_twice_changes_nothing_more(
    client: TestClient, engine: Engine, web_settings: Settings
) -> None:
    # Providers retry: a repeated one-click POST answers 200 and leaves the first record as it is.
    sid = make_subscriber(engine)
    path = path_of(unsubscribe_url(web_settings, sid))
    assert client.post(path, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    first = subscriber_row(engine, sid)["status_changed_at"]
    assert client.post(path, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert subscriber_row(engine, sid)["status_changed_at"] == first
    assert status_of(engine, sid) == "unsubscribed"


@pytest.mark.parametrize("status", ["bounced", "complained"])
def test_unsubscribe_never_weakens_a_bounce_or_complaint(
    client: TestClient, engine: Engine, web_settings: Settings, status: str
) -> None:
    # A dead or complaining address stays suppressed as such; the page offers no way back.
    sid = make_subscriber(engine, status=status)
    path = path_of(unsubscribe_url(web_settings, sid))
    client.post(path, data={"List-Unsubscribe": "One-Click"})
    value = forge_valid_csrf(client, web_settings, token_of(path))
    page = client.post(path, data={"action": "resubscribe", "csrf": value})
    assert page.status_code == 200
    assert "This address gets no digest" in page.text
    assert status_of(engine, sid) == status


# --- tokens --------------------------------------------------------------------------------------


def _altered(token: str) -> list[str]:
    payload, _, signature = token.partition(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    return [
        f"{payload}.{flipped}",
        payload,
        f"{payload}.",
        "not-a-token",
        token[:-2],
        f"{payload}x.{signature}",
        "a" * 5000,
    ]


def test_forged_or_altered_tokens_get_400_and_no_ones_data(
    client: TestClient, engine: Engine, web_settings: Settings
) -> None:
    # A token that is not exactly one we signed shows a 400 page and nobody's address or choices.
    sid = make_subscriber(engine, "victim@example.com", categories=["Writing"])
    for prefix, purpose in [
        ("unsubscribe", Purpose.UNSUBSCRIBE),
        ("preferences", Purpose.PREFERENCES),
        ("confirm", Purpose.CONFIRM),
    ]:
        for bad in _altered(make_token(web_settings.signing_key(), purpose, sid)):
            for response in (
                client.get(f"/{prefix}/{bad}"),
                client.post(f"/{prefix}/{bad}", data={"List-Unsubscribe": "One-Click"}),
            ):
                assert response.status_code == 400, (prefix, bad)
                assert "victim" not in response.text
                assert "Writing" not in response.text
    assert status_of(engine, sid) == "active"


@pytest.mark.parametrize("prefix", ["unsubscribe", "preferences", "confirm"])
def test_non_ascii_tokens_get_a_400_page_not_a_server_error(
    client: TestClient, engine: Engine, web_settings: Settings, prefix: str
) -> None:
    # A token with non-ASCII characters (here percent-encoded UTF-8) is a bad link, not a 500.
    sid = make_subscriber(engine)
    payload = make_token(web_settings.signing_key(), Purpose.UNSUBSCRIBE, sid).partition(".")[0]
    for bad in ["a.%C3%A9", f"{payload}.%C3%A9%C3%A9", "%E2%80%AE.abc"]:
        for response in (
            client.get(f"/{prefix}/{bad}"),
            client.post(f"/{prefix}/{bad}", data={"List-Unsubscribe": "One-Click"}),
        ):
            assert response.status_code == 400, (prefix, bad, response.status_code)
            assert "This link is not valid" in response.text
    assert status_of(engine, sid) == "active"


def test_a_token_signed_with_another_key_is_refused(client: TestClient, engine: Engine) -> None:
    # Only DIGEST_SECRET_KEY signs valid links: a token made with any other key is a forgery.
    sid = make_subscriber(engine)
    forged = make_token(b"someone else's key", Purpose.UNSUBSCRIBE, sid)
    response = client.post(f"/unsubscribe/{forged}", data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 400
    assert status_of(engine, sid) == "active"


def test_wrong_purpose_tokens_are_refused(
    client: TestClient, engine: Engine, web_settings: Settings
) -> None:
    # A preferences or confirmation token never unsubscribes, and the other way round.
    sid = make_subscriber(engine, status="pending")
    prefs = token_of(preferences_url(web_settings, sid))
    confirm = token_of(confirm_url(web_settings, sid))
    unsub = token_of(unsubscribe_url(web_settings, sid))
    assert (
        client.post(f"/unsubscribe/{prefs}", data={"List-Unsubscribe": "One-Click"}).status_code
        == 400
    )
    assert (
        client.post(f"/unsubscribe/{confirm}", data={"List-Unsubscribe": "One-Click"}).status_code
        == 400
    )
    assert client.get(f"/preferences/{unsub}").status_code == 400
    assert client.get(f"/confirm/{unsub}").status_code == 400
    assert client.get(f"/confirm/{prefs}").status_code == 400
    assert status_of(engine, sid) == "pending"


def test_a_valid_token_of_a_deleted_subscriber_gets_400(
    client: TestClient, web_settings: Settings
) -> None:
    # A signed link whose subscriber no longer exists is refused like a forged one.
    assert client.get(path_of(unsubscribe_url(web_settings, 987654))).status_code == 400
    assert client.get(path_of(preferences_url(web_settings, 987654))).status_code == 400


# --- preferences ---------------------------------------------------------------------------------


def test_preferences_offer_catalog_categories_and_save_with_csrf(
    client: TestClient, engine: Engine, web_settings: Settings
) -> None:
    # The page lists the catalog's categories; a POST with its CSRF value saves the choice. A
    # name no box offers (a forged form, or one older than the catalog) saves nothing and says
    # so: dropped, it would have turned a reader's one category into every category.
    make_tool(engine, "a", "Developer Tools")
    make_tool(engine, "b", "Writing")
    make_tool(engine, "c", "writing")
    sid = make_subscriber(engine)
    path = path_of(preferences_url(web_settings, sid))
    page = client.get(path)
    assert page.status_code == 200
    assert page.text.count('type="checkbox"') == 2
    saved = client.post(path, data={"csrf": csrf_from(page.text), "category": ["writing"]})
    assert saved.status_code == 200
    assert "Saved." in saved.text
    assert subscriber_row(engine, sid)["categories"] == ["Writing"]

    for forged in (["Not A Category"], ["developer tools", "<b>Not</b> A Category"]):
        refused = client.post(path, data={"csrf": csrf_from(saved.text), "category": forged})
        assert refused.status_code == 400
        assert "Not saved." in refused.text and "Saved." not in refused.text
        assert "&lt;b&gt;Not&lt;/b&gt; A Category" in refused.text or len(forged) == 1
        assert subscriber_row(engine, sid)["categories"] == ["Writing"]

    cleared = client.post(path, data={"csrf": csrf_from(saved.text)})
    assert cleared.status_code == 200
    assert "every category" in cleared.text
    assert subscriber_row(engine, sid)["categories"] == []


def test_preferences_post_without_matching_csrf_is_refused(
    client: TestClient, engine: Engine, web_settings: Settings
) -> None:
    # No field, another page's field, or no cookie: the choice is not saved.
    make_tool(engine, "a", "Writing")
    sid = make_subscriber(engine)
    other = make_subscriber(engine, "other@example.com")
    path = path_of(preferences_url(web_settings, sid))
    other_page = client.get(path_of(preferences_url(web_settings, other)))
    client.get(path)
    assert client.post(path, data={"category": "Writing"}).status_code == 403
    wrong = {"category": "Writing", "csrf": csrf_from(other_page.text)}
    assert client.post(path, data=wrong).status_code == 403
    value = csrf_from(client.get(path).text)
    client.cookies.clear()
    assert client.post(path, data={"category": "Writing", "csrf": value}).status_code == 403
    assert subscriber_row(engine, sid)["categories"] == []


def test_catalog_text_is_escaped_on_the_preferences_page(
    client: TestClient, engine: Engine, web_settings: Settings
) -> None:
    # Category names come from the untrusted catalog: they are shown as text, never as markup.
    make_tool(engine, "x", '<script>alert("x")</script>')
    sid = make_subscriber(engine)
    page = client.get(path_of(preferences_url(web_settings, sid)))
    assert "<script>" not in page.text
    assert "&lt;script&gt;" in page.text


# --- sign-up -------------------------------------------------------------------------------------


def test_a_sign_up_naming_a_category_we_do_not_send_is_refused_and_records_nobody(
    client: TestClient, engine: Engine, sent: list[EmailMessage]
) -> None:
    # Dropped, the unknown name would have signed the reader up for every category.
    make_tool(engine, "a", "Writing")
    response = client.post(
        "/subscribe", data={"email": "new@example.com", "category": ["Writing", "<i>Nope</i>"]}
    )
    assert response.status_code == 400
    assert "We send no category called “&lt;i&gt;Nope&lt;/i&gt;”" in response.text
    assert 'value="Writing" checked' in response.text  # the known choice stays ticked
    with engine.begin() as connection:
        assert connection.execute(select(Subscriber.__table__)).first() is None  # type: ignore[attr-defined]
    assert sent == []


def test_subscribe_then_confirm_twice_records_consent_once(
    client: TestClient, engine: Engine, sent: list[EmailMessage]
) -> None:
    # Double opt-in: pending until the emailed link is opened; a second click changes nothing.
    make_tool(engine, "a", "Writing")
    form = client.get("/subscribe")
    assert form.status_code == 200
    response = client.post("/subscribe", data={"email": "New@Example.com", "category": "writing"})
    assert response.status_code == 200
    assert "Check your inbox" in response.text
    with engine.begin() as connection:
        row = connection.execute(select(Subscriber.__table__)).mappings().one()  # type: ignore[attr-defined]
    assert row["status"] == "pending"
    assert row["email_key"] == "new@example.com"
    assert row["categories"] == ["Writing"]

    assert len(sent) == 1
    message = sent[0]
    # Stored and mailed as email-validator normalises it: the domain lower-cased.
    assert message["To"] == "New@example.com"
    assert message["X-Digest-Kind"] == "confirmation"
    [link] = confirmation_links(sent)

    page = client.get(path_of(link))
    assert page.status_code == 200
    assert "Confirm your subscription" in page.text
    assert subscriber_row(engine, row["id"])["status"] == "pending"
    first = client.post(path_of(link), data={"csrf": csrf_from(page.text)})
    assert first.status_code == 200
    assert "You are subscribed" in first.text
    confirmed = subscriber_row(engine, row["id"])
    assert confirmed["status"] == "active"
    assert confirmed["confirmed_at"] is not None
    assert confirmed["consent_ip"] == "testclient"
    assert confirmed["consent_form_version"] == "subscribe-form/1"

    again = client.post(path_of(link), data={"csrf": csrf_from(page.text)})
    assert again.status_code == 200
    assert subscriber_row(engine, row["id"])["confirmed_at"] == confirmed["confirmed_at"]


def test_sign_ups_racing_for_one_address_reserve_one_confirmation(engine: Engine) -> None:
    # Eight sign-ups of one pending address at the same moment: one confirmation goes. Checking
    # the row per request let several through before the first had gone.
    from digest.audience.lifecycle import reserve_confirmation
    from digest.db import session_scope

    subscriber = make_subscriber(engine, "race@example.com", status="pending")
    start = threading.Barrier(8)
    reserved: list[datetime | None] = []

    def sign_up() -> None:
        start.wait()
        with session_scope(engine) as session:
            reserved.append(reserve_confirmation(session=session, subscriber_id=subscriber))

    threads = [threading.Thread(target=sign_up) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(reserved) == 8
    assert sum(when is not None for when in reserved) == 1


def test_a_sign_up_for_an_unsubscribed_address_keeps_its_owners_categories(
    client: TestClient, engine: Engine, sent: list[EmailMessage]
) -> None:
    # Anyone may type an address into the form: it mails the owner a confirmation, and changes
    # nothing their own Re-subscribe would restore.
    make_tool(engine, "a", "Writing")
    gone = make_subscriber(engine, "alan@example.com", status="unsubscribed", categories=["Coding"])
    response = client.post("/subscribe", data={"email": "alan@example.com", "category": "writing"})
    assert "Check your inbox" in response.text
    assert len(sent) == 1
    assert subscriber_row(engine, gone)["categories"] == ["Coding"]
    assert status_of(engine, gone) == "unsubscribed"


def test_subscribing_twice_is_harmless(
    client: TestClient, engine: Engine, sent: list[EmailMessage]
) -> None:
    # A second sign-up of a pending address resends the link once a pause has passed, never
    # sooner (the form cannot flood an inbox); of an active one, it changes nothing.
    client.post("/subscribe", data={"email": "twice@example.com"})
    client.post("/subscribe", data={"email": "TWICE@example.com"})
    with engine.begin() as connection:
        rows = connection.execute(select(Subscriber.__table__)).mappings().all()  # type: ignore[attr-defined]
    assert len(rows) == 1
    assert len(sent) == 1
    with engine.begin() as connection:
        connection.execute(
            update(Subscriber)
            .where(Subscriber.email_key == "twice@example.com")  # type: ignore[arg-type]
            .values(confirmation_sent_at=datetime.now(UTC) - CONFIRMATION_COOLDOWN)
        )
    client.post("/subscribe", data={"email": "twice@example.com"})
    assert len(sent) == 2
    # Each link carries its own issue time; both confirm the same one subscriber.
    key = get_settings().signing_key()
    tokens = [link.rpartition("/")[2] for link in confirmation_links(sent)]
    confirmed = {
        read_timed_token(key, Purpose.CONFIRM, token, now=time.time(), max_age=3600)
        for token in tokens
    }
    assert len(tokens) == 2 and confirmed == {rows[0]["id"]}

    active = make_subscriber(engine, "active@example.com", categories=["Writing"])
    sent.clear()
    response = client.post("/subscribe", data={"email": "active@example.com"})
    assert "Check your inbox" in response.text
    assert sent == []
    assert subscriber_row(engine, active)["categories"] == ["Writing"]
    assert status_of(engine, active) == "active"


def test_the_confirmation_goes_through_sendgrid_with_no_delivery_row(
    web_settings: Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Through the real SendGrid client the confirmation carries delivery id "0", so its events
    # can never touch a digest's ledger row; a failed send shows nothing and a retry works.
    with FakeSendGrid(api_key="SG.test-key") as fake:
        with SettledClient(create_app(send_through(monkeypatch, fake)), base_url=SITE) as c:
            fake.always(Fault(status=500, message="internal error"))
            failed = c.post("/subscribe", data={"email": "sg@example.com"})
            assert failed.status_code == 200 and "Check your inbox" in failed.text
            assert "SG.test-key" not in failed.text
            fake.always(None)
            assert c.post("/subscribe", data={"email": "sg@example.com"}).status_code == 200
        accepted = fake.accepted
    assert [m.to for m in accepted] == ["sg@example.com"]
    assert accepted[0].custom_args == {"digest_id": "0", "delivery_id": "0"}
    assert accepted[0].subject == "Confirm your subscription to Verdict Digest"


def test_the_confirmation_goes_through_the_backend_the_app_was_given(
    client: TestClient, backends: RecordingBackends, web_settings: Settings
) -> None:
    # The app sends with the factory handed to create_app, with its own settings, asking for a
    # backend that gives up soon: a visitor is waiting for the page.
    assert client.post("/subscribe", data={"email": "wait@example.com"}).status_code == 200
    [message] = backends.sent
    assert message["To"] == "wait@example.com"
    assert backends.asked == [(web_settings, True)]


def test_sign_up_categories_match_the_catalog_through_the_one_category_key(
    client: TestClient, engine: Engine
) -> None:
    # Case, runs of spaces and compatibility forms do not matter; the catalog's spelling is kept.
    make_tool(engine, "a", "Developer Tools")
    make_tool(engine, "b", "Writing")
    data = {"email": "keys@example.com", "category": ["  developer   TOOLS ", "\uff37riting"]}
    assert client.post("/subscribe", data=data).status_code == 200
    with engine.begin() as connection:
        row = connection.execute(select(Subscriber.__table__)).mappings().one()  # type: ignore[attr-defined]
    assert row["categories"] == ["Developer Tools", "Writing"]


@pytest.mark.parametrize("status", ["bounced", "complained"])
def test_sign_up_never_revives_a_bounced_or_complaining_address(
    client: TestClient,
    engine: Engine,
    web_settings: Settings,
    status: str,
    sent: list[EmailMessage],
) -> None:
    # Neither the form nor any confirm link brings back an address that bounced or complained.
    sid = make_subscriber(engine, "gone@example.com", status=status)
    response = client.post("/subscribe", data={"email": "gone@example.com"})
    assert "Check your inbox" in response.text
    assert sent == []
    path = path_of(confirm_url(web_settings, sid))
    page = client.get(path)
    assert "This address gets no digest" in page.text
    value = forge_valid_csrf(client, web_settings, token_of(path))
    assert "This address gets no digest" in client.post(path, data={"csrf": value}).text
    assert status_of(engine, sid) == status


def test_an_unsubscribed_person_comes_back_only_by_confirming_with_a_button(
    client: TestClient, engine: Engine, sent: list[EmailMessage]
) -> None:
    # Re-subscribing through the form mails a link; opening it asks, and only the POST reactivates.
    sid = make_subscriber(engine, "back@example.com", status="unsubscribed")
    client.post("/subscribe", data={"email": "back@example.com"})
    assert status_of(engine, sid) == "unsubscribed"
    [link] = confirmation_links(sent)
    page = client.get(path_of(link))
    assert "Subscribe again?" in page.text
    assert status_of(engine, sid) == "unsubscribed"
    done = client.post(path_of(link), data={"csrf": csrf_from(page.text)})
    assert "You are subscribed" in done.text
    assert status_of(engine, sid) == "active"


def test_a_bad_address_is_refused_and_shown_back_escaped(
    client: TestClient, engine: Engine, sent: list[EmailMessage]
) -> None:
    # The form says what is wrong, keeps what was typed, and never echoes it as markup.
    response = client.post("/subscribe", data={"email": '<script>x</script>"@'})
    assert response.status_code == 400
    assert "not an email address" in response.text
    assert "<script>x" not in response.text
    assert "&lt;script&gt;x" in response.text
    assert sent == []
    with engine.begin() as connection:
        assert connection.execute(select(Subscriber.__table__)).first() is None  # type: ignore[attr-defined]


# --- archive -------------------------------------------------------------------------------------


def test_archive_shows_the_sent_digest_with_tokens_blanked(
    client: TestClient, engine: Engine
) -> None:
    # The web version is the every-category email as sent, with nobody's personal links in it.
    html = (
        "<html><body><p>Hi %%name_html%%</p>"
        '<a href="%%unsubscribe_url%%">Unsubscribe</a> <a href="%%preferences_url%%">Prefs</a>'
        "</body></html>"
    )
    make_digest(engine, "2026-W47", html=html)
    page = client.get("/archive/2026-W47")
    assert page.status_code == 200
    assert "%%" not in page.text
    assert "Hi there" in page.text
    assert f'href="{SITE}/unsubscribe"' in page.text
    assert "style-src 'unsafe-inline'" in page.headers["content-security-policy"]
    assert "script-src" not in page.headers["content-security-policy"]

    listing = client.get("/archive")
    assert listing.status_code == 200
    assert 'href="/archive/2026-W47"' in listing.text


def test_archive_renders_frozen_content_when_nobody_got_every_category(
    client: TestClient, engine: Engine
) -> None:
    # With only category variants sent, the web version is rendered from the frozen content,
    # catalog text escaped, tokens blanked.
    hostile = make_pair(0, a=make_tool_card("new-tool-0", name="<script>alert(1)</script>Hax"))
    content = make_content(pairs=[hostile, make_pair(1)], also_new=1)
    make_digest(engine, "2026-W47", content=content.model_dump(mode="json"))
    page = client.get("/archive/2026-W47")
    assert page.status_code == 200
    assert "Rival Tool 1" in page.text
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;" in page.text
    assert "%%" not in page.text
    assert client.get("/archive/2026-W47").text == page.text


def test_archive_answers_404_for_unknown_unsent_or_malformed_weeks(
    client: TestClient, engine: Engine
) -> None:
    # Only planned digests are public; any other week string is a plain 404 page.
    make_digest(engine, "2026-W46", html="<p>x</p>", planned=False)
    for week in ["2026-W47", "2026-W46", "2026-W99", "nonsense", "2026-w47", "%3Cscript%3E"]:
        response = client.get(f"/archive/{week}")
        assert response.status_code == 404, week
        assert "<script>" not in response.text


def test_healthz_reports_a_reachable_database(client: TestClient) -> None:
    # Load balancers poll this: 200 and a tiny JSON body while the database answers.
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


# --- the edges -----------------------------------------------------------------------------------


def test_every_response_carries_the_security_headers(
    client: TestClient, engine: Engine, web_settings: Settings
) -> None:
    # Pages, errors, the archive and the webhook all send CSP, nosniff, no-referrer and DENY.
    sid = make_subscriber(engine)
    make_digest(engine, "2026-W47", html="<p>x</p>")
    responses = [
        client.get("/"),
        client.get("/subscribe"),
        client.get(path_of(unsubscribe_url(web_settings, sid))),
        client.get("/unsubscribe/forged.token"),
        client.get("/no/such/page"),
        client.put("/subscribe"),
        client.get("/archive/2026-W47"),
        client.get("/healthz"),
        client.post("/webhooks/sendgrid", content=b"[]"),
        client.post("/subscribe", content=b"x" * (2 * 1024 * 1024)),
    ]
    assert {r.status_code for r in responses} >= {200, 400, 403, 404, 405, 413}
    for response in responses:
        for name, value in SECURITY_HEADERS.items():
            assert response.headers.get(name) == value, (response.request.url, name)
        policy = response.headers["content-security-policy"]
        assert "default-src 'none'" in policy
        assert "frame-ancestors 'none'" in policy


def test_a_server_error_is_a_plain_page_with_headers_and_no_traceback(
    web_settings: Settings, engine: Engine
) -> None:
    # An unexpected failure tells the visitor nothing about the code and keeps every header.
    with TestClient(create_app(web_settings), raise_server_exceptions=False) as c:
        with engine.begin() as connection:
            connection.execute(text("ALTER TABLE tool RENAME TO tool_gone"))
        response = c.get("/subscribe")
    assert response.status_code == 500
    assert "Something went wrong" in response.text
    assert "Traceback" not in response.text
    for leak in ("sqlalchemy", "tool_gone", "select", "does not exist", "no such table"):
        assert leak not in response.text.lower()
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value


def test_there_are_no_redirects_at_all(client: TestClient, engine: Engine) -> None:
    # No redirect is ever built from a request, so none can point off the site.
    for path in [
        "/archive/",
        "//evil.example/",
        "/subscribe/",
        "/unsubscribe/",
        "/%2F%2Fevil.example",
    ]:
        response = client.get(path, headers={"Host": "evil.example"})
        assert response.status_code < 300 or response.status_code >= 400, path
        assert "location" not in response.headers


def test_request_bodies_are_limited(
    client: TestClient, web_settings: Settings, engine: Engine
) -> None:
    # Forms take at most 1 MB and the webhook 5 MB; larger bodies get 413 and are not read.
    sid = make_subscriber(engine)
    big = b"List-Unsubscribe=One-Click&pad=" + b"x" * (1024 * 1024)
    response = client.post(
        path_of(unsubscribe_url(web_settings, sid)),
        content=big,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 413
    assert status_of(engine, sid) == "active"
    # Two MB is fine for the webhook (refused only for lacking a signature), six MB is not.
    assert client.post("/webhooks/sendgrid", content=b" " * (2 * 1024 * 1024)).status_code == 403
    assert client.post("/webhooks/sendgrid", content=b" " * (6 * 1024 * 1024)).status_code == 413


# --- hostile sign-ups ------------------------------------------------------------------------


def _pending(engine: Engine, email: str) -> int:
    return make_subscriber(engine, email, status="pending")


def test_get_and_head_on_a_confirm_link_never_activate(
    client: TestClient, engine: Engine, web_settings: Settings
) -> None:
    # A mail scanner that prefetches the link (GET or HEAD) confirms nobody: only the button does.
    sid = _pending(engine, "scan@example.com")
    path = path_of(confirm_url(web_settings, sid))
    assert client.head(path).status_code == 200
    page = client.get(path)
    assert page.status_code == 200 and "Yes, subscribe me" in page.text
    assert status_of(engine, sid) == "pending"
    assert client.post(path, data={"csrf": csrf_from(page.text)}).status_code == 200
    assert status_of(engine, sid) == "active"


@pytest.mark.parametrize("kind", ["old", "untimed"])
def test_an_expired_or_untimed_confirm_link_confirms_nobody(
    client: TestClient, engine: Engine, web_settings: Settings, kind: str
) -> None:
    # A confirm token older than DIGEST_CONFIRM_TOKEN_DAYS (or one without a time) is refused.
    sid = _pending(engine, "late@example.com")
    if kind == "old":
        url = confirm_url(web_settings, sid, issued_at=time.time() - 8 * 86400)
    else:
        # An untimed token, as confirmation mails carried before tokens had an issue time.
        untimed = make_token(web_settings.signing_key(), Purpose.CONFIRM, sid)
        url = f"{web_settings.site_url}/confirm/{untimed}"
    path = path_of(url)
    page = client.get(path)
    assert page.status_code == 400 and "expired" in page.text
    value = forge_valid_csrf(client, web_settings, token_of(path))
    assert client.post(path, data={"csrf": value}).status_code == 400
    assert status_of(engine, sid) == "pending"


class FailingBackends(RecordingBackends):
    """A provider that is down: every send raises a transient error."""

    def __call__(self, settings: Settings, *, interactive: bool = False) -> EmailBackend:
        from digest.send.base import TransientSendError

        class Down(MemoryBackend):
            def send_batch(self, batch: Any) -> Any:
                raise TransientSendError("provider down")

        return Down(sent=self.sent)


def test_known_and_new_addresses_get_the_same_answer_when_the_provider_fails(
    web_settings: Settings, engine: Engine
) -> None:
    # A provider error no longer gives a 503 for new addresses only: the answer tells nothing.
    make_subscriber(engine, "known@example.com")
    app = create_app(web_settings, backend_factory=FailingBackends())
    with SettledClient(app, base_url=SITE) as c:
        known = c.post("/subscribe", data={"email": "known@example.com"})
        new = c.post("/subscribe", data={"email": "new@example.com"})
    assert (known.status_code, new.status_code) == (200, 200)
    assert known.text == new.text


class BlockedBackends(RecordingBackends):
    """A provider that answers only once the test lets it."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def __call__(self, settings: Settings, *, interactive: bool = False) -> EmailBackend:
        release, sent = self.release, self.sent

        class Slow(MemoryBackend):
            def send_batch(self, batch: Any) -> Any:
                release.wait(30)
                return super().send_batch(batch)

        return Slow(sent=sent)


def test_the_sign_up_answer_does_not_wait_for_the_provider(
    web_settings: Settings, engine: Engine
) -> None:
    # The page comes before the provider call, so a new address answers as fast as a known one.
    backends = BlockedBackends()
    with TestClient(create_app(web_settings, backend_factory=backends), base_url=SITE) as c:
        started = time.monotonic()
        response = c.post("/subscribe", data={"email": "slow@example.com"})
        assert time.monotonic() - started < 5
        assert response.status_code == 200 and backends.sent == []
        backends.release.set()
    assert [m["To"] for m in backends.sent] == ["slow@example.com"]


def _limited_client(
    monkeypatch: pytest.MonkeyPatch, backends: RecordingBackends, **limits: str
) -> SettledClient:
    for name, value in limits.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    return SettledClient(create_app(get_settings(), backend_factory=backends), base_url=SITE)


def test_sign_ups_per_mailbox_are_limited_with_plus_tags_folded(
    web_settings: Settings, monkeypatch: pytest.MonkeyPatch, backends: RecordingBackends
) -> None:
    # a+x@d and a+y@d count as a@d: a third sign-up of that mailbox gets the 429 page.
    with _limited_client(monkeypatch, backends, DIGEST_SIGNUP_LIMIT_PER_ADDRESS="2") as c:
        assert c.post("/subscribe", data={"email": "a+x@example.com"}).status_code == 200
        assert c.post("/subscribe", data={"email": "A+y@example.com"}).status_code == 200
        refused = c.post("/subscribe", data={"email": "a@example.com"})
        assert c.post("/subscribe", data={"email": "b@example.com"}).status_code == 200
    assert refused.status_code == 429
    assert "Too many sign-ups" in refused.text
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'none'" in refused.headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    "setting", ["DIGEST_SIGNUP_LIMIT_PER_IP", "DIGEST_SIGNUP_LIMIT_TOTAL"], ids=["ip", "total"]
)
def test_sign_ups_per_ip_and_overall_are_limited(
    web_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    backends: RecordingBackends,
    setting: str,
) -> None:
    # One client (or everyone together) gets 429 past the limit, whatever the addresses.
    with _limited_client(monkeypatch, backends, **{setting: "3"}) as c:
        codes = [
            c.post("/subscribe", data={"email": f"p{i}@example.com"}).status_code for i in range(4)
        ]
    assert codes == [200, 200, 200, 429]
