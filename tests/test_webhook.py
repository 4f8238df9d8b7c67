"""The SendGrid event webhook end to end: signed like SendGrid signs, on a real database.

The key pair is made here (ECDSA P-256, as SendGrid's); requests are signed over
`timestamp + raw body` and go through the web app to the ledger (SQLite and PostgreSQL).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import select, text
from sqlalchemy.engine import Engine
from starlette.testclient import TestClient

from digest.config import Settings, get_settings
from digest.db import get_engine, session_scope
from digest.delivery import ledger
from digest.delivery.events import NormalizedEvent, apply_events
from digest.models import Delivery, DeliveryEvent, Digest
from digest.render.variant import RenderedVariant
from digest.states import EVENT_RANK, DeliveryState
from digest.web.app import create_app
from digest.webhooks.sendgrid import SIGNATURE_HEADER, TIMESTAMP_HEADER, SendGridWebhook
from tests.support.web_rows import make_delivery, make_digest, make_subscriber, status_of
from tests.support.webhook_events import Signer, event, fresh_ids

PATH = "/webhooks/sendgrid"
EVENT_TABLE = DeliveryEvent.__table__  # type: ignore[attr-defined]
DELIVERY_TABLE = Delivery.__table__  # type: ignore[attr-defined]


@pytest.fixture
def signer() -> Signer:
    return Signer()


@pytest.fixture
def web_settings(settings: Settings, signer: Signer, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("DIGEST_SENDGRID_WEBHOOK_PUBLIC_KEY", signer.public_key_b64)
    get_settings.cache_clear()
    return get_settings()


@pytest.fixture
def engine(web_settings: Settings) -> Engine:
    return get_engine(web_settings.database_url)


@pytest.fixture
def client(web_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(web_settings)) as c:
        yield c


def post(client: TestClient, signer: Signer, events: list[dict[str, Any]], **kw: Any) -> Any:
    body = json.dumps(events).encode()
    return client.post(PATH, content=body, headers=signer.headers(body, **kw))


def delivery_state(engine: Engine, delivery_id: int) -> str:
    with engine.begin() as connection:
        return str(
            connection.execute(
                select(DELIVERY_TABLE.c.state).where(DELIVERY_TABLE.c.id == delivery_id)
            ).scalar_one()
        )


def recorded(engine: Engine) -> list[dict[str, Any]]:
    with engine.begin() as connection:
        rows = connection.execute(select(EVENT_TABLE).order_by(EVENT_TABLE.c.id)).mappings()
        return [dict(r) for r in rows]


@pytest.fixture
def sent(engine: Engine) -> tuple[int, int]:
    """(subscriber id, delivery id) of one digest sent to one active subscriber."""
    subscriber_id = make_subscriber(engine)
    digest_id = make_digest(engine, "2026-W47")
    return subscriber_id, make_delivery(engine, digest_id, subscriber_id, "sent")


# --- verification --------------------------------------------------------------------------------


def test_a_signed_batch_is_accepted_and_applied(
    client: TestClient, signer: Signer, engine: Engine, sent: tuple[int, int]
) -> None:
    # A batch signed with the configured key is recorded and moves the delivery forward.
    _, delivery_id = sent
    batch = [event("processed", delivery_id), event("delivered", delivery_id)]
    response = post(client, signer, batch)
    assert response.status_code == 200
    assert response.json()["recorded"] == 2
    assert delivery_state(engine, delivery_id) == "delivered"
    rows = recorded(engine)
    assert [r["provider_event"] for r in rows] == ["processed", "delivered"]
    assert rows[1]["raw"] == batch[1]
    assert rows[1]["delivery_id"] == delivery_id


def test_a_tampered_body_is_rejected(
    client: TestClient, signer: Signer, engine: Engine, sent: tuple[int, int]
) -> None:
    # One changed byte after signing and the request is refused before anything is stored.
    _, delivery_id = sent
    body = json.dumps([event("bounce", delivery_id, type="bounce")]).encode()
    headers = signer.headers(body)
    tampered = body.replace(b'"bounce"', b'"bounc3"', 1)
    assert client.post(PATH, content=tampered, headers=headers).status_code == 403
    assert client.post(PATH, content=body + b" ", headers=headers).status_code == 403
    assert recorded(engine) == []
    assert delivery_state(engine, delivery_id) == "sent"


@pytest.mark.parametrize("offset", [-11 * 60, -3600, 10 * 60])
def test_a_stale_or_future_timestamp_is_rejected(
    client: TestClient, signer: Signer, engine: Engine, sent: tuple[int, int], offset: int
) -> None:
    # A request signed more than 10 minutes ago (a replay) or far ahead is refused.
    _, delivery_id = sent
    response = post(
        client, signer, [event("delivered", delivery_id)], timestamp=int(time.time()) + offset
    )
    assert response.status_code == 403
    assert recorded(engine) == []


def test_a_replay_inside_the_window_changes_nothing(
    client: TestClient, signer: Signer, engine: Engine, sent: tuple[int, int]
) -> None:
    # The very same signed request again is answered 200 and ignored as duplicates.
    _, delivery_id = sent
    body = json.dumps([event("delivered", delivery_id), event("open", delivery_id)]).encode()
    headers = signer.headers(body)
    assert client.post(PATH, content=body, headers=headers).json()["recorded"] == 2
    again = client.post(PATH, content=body, headers=headers)
    assert again.status_code == 200
    assert again.json()["duplicates"] == 2
    assert len(recorded(engine)) == 2


def test_missing_malformed_or_foreign_signatures_are_rejected(
    client: TestClient, signer: Signer, engine: Engine, sent: tuple[int, int]
) -> None:
    # No header, garbage, a non-DER blob or another key's signature: 403, never a 500.
    _, delivery_id = sent
    body = json.dumps([event("delivered", delivery_id)]).encode()
    good = signer.headers(body)
    stamp = good[TIMESTAMP_HEADER]
    cases = [
        {},
        {TIMESTAMP_HEADER: stamp},
        {SIGNATURE_HEADER: good[SIGNATURE_HEADER]},
        {SIGNATURE_HEADER: "!!not base64!!", TIMESTAMP_HEADER: stamp},
        {SIGNATURE_HEADER: base64.b64encode(b"\x00" * 70).decode(), TIMESTAMP_HEADER: stamp},
        {SIGNATURE_HEADER: "", TIMESTAMP_HEADER: stamp},
        {SIGNATURE_HEADER: good[SIGNATURE_HEADER], TIMESTAMP_HEADER: "soon"},
        {SIGNATURE_HEADER: good[SIGNATURE_HEADER], TIMESTAMP_HEADER: str(int(stamp) + 1)},
        Signer().headers(body),
    ]
    for headers in cases:
        assert client.post(PATH, content=body, headers=headers).status_code == 403, headers
    assert client.post(PATH, content=b"\xff\xfe" + body, headers=good).status_code == 403
    assert recorded(engine) == []


def test_without_a_configured_key_every_request_is_refused(
    settings: Settings, signer: Signer, engine: Engine
) -> None:
    # With no verification key nothing can be trusted, so nothing is accepted.
    assert not settings.sendgrid_webhook_public_key
    body = b"[]"
    with TestClient(create_app(settings)) as bare:
        assert bare.post(PATH, content=body, headers=signer.headers(body)).status_code == 403


def test_a_signed_body_that_is_not_an_event_array_is_a_400(
    client: TestClient, signer: Signer
) -> None:
    # Authentic but unreadable payloads are refused as bad requests, not stored.
    for body in [b"{not json", b'{"event": "delivered"}', b'"text"']:
        assert client.post(PATH, content=body, headers=signer.headers(body)).status_code == 400


def test_the_public_key_may_be_pasted_as_pem(
    settings: Settings, signer: Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Operators paste keys in either form; a PEM block verifies exactly like the bare base64.
    pem = signer.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    monkeypatch.setenv("DIGEST_SENDGRID_WEBHOOK_PUBLIC_KEY", pem.decode())
    get_settings.cache_clear()
    body = b"[]"
    with TestClient(create_app(get_settings())) as c:
        assert c.post(PATH, content=body, headers=signer.headers(body)).status_code == 200


# --- applying events -----------------------------------------------------------------------------


def test_a_duplicate_sg_event_id_is_ignored(
    client: TestClient, signer: Signer, engine: Engine, sent: tuple[int, int]
) -> None:
    # SendGrid delivers at least once: an id seen before is never applied again, even altered.
    subscriber_id, delivery_id = sent
    first = event("delivered", delivery_id)
    post(client, signer, [first])
    clash = event("bounce", delivery_id, type="bounce", sg_event_id=first["sg_event_id"])
    response = post(client, signer, [clash, clash])
    assert response.json()["duplicates"] == 2
    assert delivery_state(engine, delivery_id) == "delivered"
    assert status_of(engine, subscriber_id) == "active"
    assert len(recorded(engine)) == 1


def test_a_late_delivered_after_bounced_keeps_bounced(
    client: TestClient, signer: Signer, engine: Engine, sent: tuple[int, int]
) -> None:
    # Events arrive out of order; a row never moves to a lower-ranked state.
    _, delivery_id = sent
    post(client, signer, [event("bounce", delivery_id, type="bounce")])
    post(client, signer, [event("delivered", delivery_id), event("open", delivery_id)])
    assert delivery_state(engine, delivery_id) == "bounced"
    assert len(recorded(engine)) == 3


def test_a_hard_bounce_suppresses_the_subscriber_so_the_next_digest_skips_them(
    client: TestClient, signer: Signer, engine: Engine, sent: tuple[int, int]
) -> None:
    # After a hard bounce the subscriber is `bounced`, and planning next week's digest leaves
    # them out while still planning everyone else.
    subscriber_id, delivery_id = sent
    other = make_subscriber(engine, "grace@example.com")
    post(client, signer, [event("bounce", delivery_id, type="bounce", reason="550 no such user")])
    assert status_of(engine, subscriber_id) == "bounced"
    assert delivery_state(engine, delivery_id) == "bounced"

    next_week = make_digest(engine, "2026-W48", planned=False)
    summary = ledger.plan_recipients(
        engine,
        digest_id=next_week,
        render_variant=lambda cats: RenderedVariant("s", "<p>h</p>", "t"),
    )
    assert summary.planned == 1
    with engine.begin() as connection:
        planned = connection.execute(
            select(DELIVERY_TABLE.c.subscriber_id).where(DELIVERY_TABLE.c.digest_id == next_week)
        ).scalars()
        assert list(planned) == [other]


def test_a_blocked_soft_bounce_does_not_suppress(
    client: TestClient, signer: Signer, engine: Engine, sent: tuple[int, int]
) -> None:
    # SendGrid's "bounce" of type "blocked" is a soft bounce: the address still works.
    subscriber_id, delivery_id = sent
    post(client, signer, [event("bounce", delivery_id, type="blocked")])
    assert delivery_state(engine, delivery_id) == "bounced"
    assert status_of(engine, subscriber_id) == "active"


@pytest.mark.parametrize(
    ("payload", "status", "state"),
    [
        ({"event": "spamreport"}, "complained", "complained"),
        ({"event": "unsubscribe"}, "unsubscribed", "unsubscribed"),
        ({"event": "group_unsubscribe", "asm_group_id": 7}, "unsubscribed", "unsubscribed"),
        ({"event": "dropped", "reason": "Bounced Address"}, "bounced", "dropped"),
        ({"event": "dropped", "reason": "Spam Reporting Address"}, "complained", "dropped"),
        ({"event": "dropped", "reason": "Spam Content"}, "active", "dropped"),
        ({"event": "deferred"}, "active", "deferred"),
        ({"event": "click", "url": "https://example.com"}, "active", "clicked"),
        ({"event": "open", "sg_machine_open": True}, "active", "delivered"),
        ({"event": "group_resubscribe"}, "active", "sent"),
        ({"event": "something_new"}, "active", "sent"),
    ],
)
def test_each_sendgrid_event_maps_to_one_state_and_suppression(
    client: TestClient,
    signer: Signer,
    engine: Engine,
    sent: tuple[int, int],
    payload: dict[str, Any],
    status: str,
    state: str,
) -> None:
    # The adapter's table decides the delivery state and what happens to the subscriber.
    subscriber_id, delivery_id = sent
    extra = dict(payload)
    name = extra.pop("event")
    assert post(client, signer, [event(name, delivery_id, **extra)]).status_code == 200
    assert delivery_state(engine, delivery_id) == state
    assert status_of(engine, subscriber_id) == status


def test_a_complaint_is_never_weakened_by_a_later_unsubscribe(
    client: TestClient, signer: Signer, engine: Engine, sent: tuple[int, int]
) -> None:
    # Suppressions only get stronger: complained stays complained.
    subscriber_id, delivery_id = sent
    post(client, signer, [event("spamreport", delivery_id)])
    post(client, signer, [event("unsubscribe", delivery_id), event("bounce", delivery_id)])
    assert status_of(engine, subscriber_id) == "complained"
    assert delivery_state(engine, delivery_id) == "complained"


def test_unknown_delivery_ids_are_recorded_but_harmless(
    client: TestClient, signer: Signer, engine: Engine, sent: tuple[int, int]
) -> None:
    # Events naming no row of ours (other senders, the confirmation email, junk) are kept for
    # the record and change no delivery.
    _, delivery_id = sent
    batch = [
        event("delivered", 999_999),
        event("delivered", "not-a-number"),
        event("delivered", None),
        event("delivered", "0"),
        event("delivered", "99999999999999999999"),
    ]
    response = post(client, signer, batch)
    assert response.status_code == 200
    assert response.json()["unknown_delivery"] == 5
    rows = recorded(engine)
    assert [r["delivery_id"] for r in rows] == [None] * 5
    assert [r["raw"] for r in rows] == batch
    assert delivery_state(engine, delivery_id) == "sent"


def test_a_bounce_of_a_mail_without_delivery_row_suppresses_by_address(
    client: TestClient, signer: Signer, engine: Engine
) -> None:
    # The confirmation email has no delivery row; its hard bounce still stops the address.
    subscriber_id = make_subscriber(engine, "Typo@Example.com", status="pending")
    post(client, signer, [event("bounce", "0", type="bounce", email="typo@example.com")])
    assert status_of(engine, subscriber_id) == "bounced"


def test_an_uncertain_send_is_confirmed_by_any_event(
    client: TestClient, signer: Signer, engine: Engine
) -> None:
    # `processed` proves SendGrid accepted a send the sender could not confirm: it becomes sent,
    # so `--resend-uncertain` will not mail it twice.
    subscriber_id = make_subscriber(engine)
    delivery_id = make_delivery(engine, make_digest(engine), subscriber_id, "uncertain")
    post(client, signer, [event("processed", delivery_id)])
    assert delivery_state(engine, delivery_id) == "sent"


@pytest.mark.parametrize("state", ["pending", "sending", "failed", "skipped", "suppressed"])
def test_rows_the_sender_has_not_settled_are_never_moved(
    client: TestClient, signer: Signer, engine: Engine, state: str
) -> None:
    # Only the ledger moves pending and sending rows; an early event is recorded, nothing more.
    subscriber_id = make_subscriber(engine)
    delivery_id = make_delivery(engine, make_digest(engine), subscriber_id, state)
    post(client, signer, [event("delivered", delivery_id)])
    assert delivery_state(engine, delivery_id) == state
    assert recorded(engine)[0]["delivery_id"] == delivery_id


def test_a_batch_of_a_thousand_events_is_applied_in_one_request(
    client: TestClient, signer: Signer, engine: Engine
) -> None:
    # SendGrid posts up to about a thousand events at once: all are recorded and applied.
    digest_id = make_digest(engine)
    deliveries = [
        make_delivery(engine, digest_id, make_subscriber(engine, f"p{i}@example.com"))
        for i in range(250)
    ]
    batch = [
        event(name, d, email=f"p{i}@example.com")
        for i, d in enumerate(deliveries)
        for name in ("processed", "delivered", "open", "click")
    ]
    response = post(client, signer, batch)
    assert response.status_code == 200
    assert response.json() == {
        "received": 1000,
        "recorded": 1000,
        "duplicates": 0,
        "unknown_delivery": 0,
        "mismatched_email": 0,
        "moved": 250,
        "suppressed": 0,
        "skipped": 0,
    }
    assert {delivery_state(engine, d) for d in deliveries[::50]} == {"clicked"}


def test_a_signed_batch_of_ten_thousand_small_events_is_recorded_whole(
    client: TestClient, signer: Signer, engine: Engine
) -> None:
    # Within the body cap, a batch too big for one statement is stored in parts, not answered
    # 500: seven values an event, past PostgreSQL's 65,535 at 9,363 events (SQLite's cap here
    # is 250,000: 40,000 events failed; this size checks its parts add up).
    digest_id = make_digest(engine)
    known = make_delivery(engine, digest_id, make_subscriber(engine, "big@example.com"))
    batch: list[dict[str, object]] = [
        {"sg_event_id": f"b{i}", "event": "open", "delivery_id": str(10_000_000 + i)}
        for i in range(10_000)
    ]
    batch.append(event("delivered", known, email="big@example.com"))
    body = json.dumps(batch).encode()
    response = _post_raw(client, signer, body)
    assert response.status_code == 200, response.text[:500]
    assert response.json()["recorded"] == 10_001
    assert response.json()["moved"] == 1
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT count(*) FROM deliveryevent")).scalar_one()
    assert stored == 10_001
    assert delivery_state(engine, known) == "delivered"


# --- the rule behind it all ----------------------------------------------------------------------

_EVENT_STATES = [s for s in EVENT_RANK if s is not DeliveryState.UNCERTAIN]


@hypothesis_settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    states=st.lists(st.sampled_from(_EVENT_STATES), min_size=1, max_size=8),
    cut=st.integers(min_value=0, max_value=8),
)
def test_the_final_state_is_the_highest_ranked_whatever_the_order(
    engine: Engine, states: list[DeliveryState], cut: int
) -> None:
    # However events are ordered and split into batches, the row ends at the highest rank seen.
    address = f"h{next(fresh_ids)}@example.com"
    subscriber_id = make_subscriber(engine, address)
    with engine.begin() as connection:
        found = connection.execute(select(Digest.__table__.c.id)).scalar()  # type: ignore[attr-defined]
    digest_id = found if found is not None else make_digest(engine, "2030-W01")
    delivery_id = make_delivery(engine, digest_id, subscriber_id, "sent")
    events = [
        NormalizedEvent(f"h-{next(fresh_ids)}", s.value, delivery_id, s, None, address, None, {})
        for s in states
    ]
    with session_scope(engine) as session:
        apply_events(session=session, events=events[:cut])
    with session_scope(engine) as session:
        apply_events(session=session, events=events[cut:])
    highest = max(states, key=lambda s: EVENT_RANK[s])
    expected = highest if EVENT_RANK[highest] > 0 else DeliveryState.SENT
    assert delivery_state(engine, delivery_id) == expected.value


def test_the_mapping_table_names_every_event_sendgrid_documents() -> None:
    # Every event SendGrid sends has an entry, so none falls through unmapped by accident.
    documented = {
        "processed", "deferred", "delivered", "open", "click", "dropped", "bounce",
        "spamreport", "unsubscribe", "group_unsubscribe", "group_resubscribe",
    }  # fmt: skip
    assert documented <= set(SendGridWebhook.EVENTS)


# --- hostile signed bodies ------------------------------------------------------------------------


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def _post_raw(client: TestClient, signer: Signer, body: bytes) -> Any:
    return client.post(PATH, content=body, headers=signer.headers(body))


def test_a_deeply_nested_signed_body_is_a_400(client: TestClient, signer: Signer) -> None:
    # JSON nested past the parser's recursion limit is refused, not a 500 SendGrid retries.
    body = b"[" * 200_000 + b"]" * 200_000
    response = _post_raw(client, signer, body)
    assert response.status_code == 400


def test_unstorable_events_are_skipped_and_counted_while_the_rest_apply(
    client: TestClient, signer: Signer, engine: Engine, sent: tuple[int, int]
) -> None:
    # NaN, a lone surrogate, NUL or deep nesting skip only their event; the good one is applied.
    _, delivery_id = sent
    good = json.dumps(event("delivered", delivery_id))
    bad = [
        json.dumps(event("open", delivery_id)).replace('"open"', '"open", "score": NaN'),
        json.dumps(event("open", delivery_id, email="ada\ud800@example.com")),
        json.dumps(event("open", delivery_id, reason="a\u0000b")),
        json.dumps(event("open", delivery_id, nested=_nested(40))),
    ]
    body = ("[" + ", ".join([*bad, good]) + "]").encode()
    response = _post_raw(client, signer, body)
    assert response.status_code == 200, response.text
    assert response.json()["skipped"] == 4
    assert [r["provider_event"] for r in recorded(engine)] == ["delivered"]
    assert delivery_state(engine, delivery_id) == "delivered"


@pytest.mark.parametrize("email", ["eve@example.com", "", None])
def test_an_event_for_another_address_is_skipped_counted_and_never_applied(
    client: TestClient,
    signer: Signer,
    engine: Engine,
    sent: tuple[int, int],
    email: str | None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A signed spam report naming Ada's delivery but Eve's address suppresses nobody.
    subscriber_id, delivery_id = sent
    raw = event("spamreport", delivery_id, email=email)
    if email is None:
        del raw["email"]
    response = post(client, signer, [raw, event("delivered", delivery_id, email="ADA@example.com")])
    assert response.status_code == 200
    answer = response.json()
    assert (answer["mismatched_email"], answer["suppressed"], answer["recorded"]) == (1, 0, 2)
    assert status_of(engine, subscriber_id) == "active"
    assert delivery_state(engine, delivery_id) == "delivered"  # the matching event applies
    stray = next(r for r in recorded(engine) if r["provider_event"] == "spamreport")
    assert (stray["delivery_id"], stray["state"]) == (None, None)
    assert any("email is not the address" in r.getMessage() for r in caplog.records)
