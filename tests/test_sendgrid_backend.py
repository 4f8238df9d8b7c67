"""The SendGrid backend, through the real `sendgrid` client, against our fake SendGrid on 127.0.0.1.

Also checks that the fake itself refuses what SendGrid refuses, since every delivery test relies
on it.
"""

from __future__ import annotations

import logging
import pickle
import socket
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sendgrid
from python_http_client.exceptions import BadRequestsError, UnauthorizedError

from digest.errors import ConfigError
from digest.send.base import (
    AmbiguousSendError,
    CancelRefusedError,
    EncodedRecipients,
    OutgoingBatch,
    PermanentSendError,
    ProviderBatch,
    Recipient,
    SendAuthError,
    TransientSendError,
)
from digest.send.sendgrid import SendGridBackend
from digest.send.sendgrid_request import build_request_body, request_body
from tests.fakes.fake_sendgrid import (
    FakeSendGrid,
    FakeSendGridProcess,
    Fault,
    read_record,
)
from tests.support.sendgrid_backend import API_KEY, make_backend, make_settings

# Distinctive, so that any leak into a message or a log line is found by a plain substring test.
LEAKY_KEY = "SG.LEAKCANARY-7f3a9c1e5b2d4f6a8c0e"


def make_recipients(count: int, *, start: int = 0) -> list[Recipient]:
    return [
        Recipient(
            delivery_id=1000 + i,
            email=f"reader{i}@example.com",
            name=f"Reader {i}",
            substitutions={
                "%%unsubscribe_url%%": f"https://site.example.com/u/token-{i}",
                "%%first_name%%": f"Reader{i}",
            },
            headers={
                "List-Unsubscribe": f"<https://site.example.com/u/token-{i}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            },
        )
        for i in range(start, start + count)
    ]


def make_batch(recipients: list[Recipient], **overrides: Any) -> OutgoingBatch:
    fields: dict[str, Any] = {
        "digest_id": 42,
        "week": "2026-W47",
        "subject": "This week: %%first_name%%, 3 new head-to-heads",
        "html": '<p>Hello %%first_name%%</p><a href="%%unsubscribe_url%%">Unsubscribe</a>',
        "text": "Hello %%first_name%%\nUnsubscribe: %%unsubscribe_url%%",
        "recipients": recipients,
        "from_email": "digest@verdicts.example.com",
        "from_name": "Verdict Digest",
    }
    fields.update(overrides)
    return OutgoingBatch(**fields)


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeSendGrid]:
    with FakeSendGrid(API_KEY, record_path=tmp_path / "record.jsonl") as server:
        yield server


def raw_post(url: str, body: dict[str, Any], key: str = API_KEY) -> Any:
    """Posts a hand-built body with the real client, bypassing the backend."""
    return sendgrid.SendGridAPIClient(key, host=url).client.mail.send.post(request_body=body)


def one_person(email: str, **extra: Any) -> dict[str, Any]:
    return {"to": [{"email": email}], **extra}


def minimal_body(personalizations: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "personalizations": personalizations,
        "from": {"email": "digest@verdicts.example.com"},
        "subject": "Hello",
        "content": [{"type": "text/plain", "value": "Hi"}],
    }
    body.update(extra)
    return body


# The request the backend builds ----------------------------------------------------------------


def test_personalizations_keep_recipient_order_in_one_request(fake: FakeSendGrid) -> None:
    # One batch is exactly one request, and its personalizations follow the recipients' order.
    backend, _ = make_backend(fake.url)
    recipients = make_recipients(250)
    result = backend.send_batch(make_batch(recipients))
    assert len(fake.requests) == 1
    assert [m.to for m in fake.accepted] == [r.email for r in recipients]
    assert [m.index for m in fake.accepted] == list(range(250))
    assert result.accepted == 250
    assert result.message_id == fake.requests[0].message_id is not None


def test_each_personalization_carries_only_its_own_recipient_data(fake: FakeSendGrid) -> None:
    # Substitutions, List-Unsubscribe headers and ids are per recipient, never shared or mixed.
    backend, _ = make_backend(fake.url)
    recipients = make_recipients(5)
    backend.send_batch(make_batch(recipients))
    for message, recipient in zip(fake.accepted, recipients, strict=True):
        assert message.recipients == [recipient.email]
        assert message.name == recipient.name
        assert message.substitutions == recipient.substitutions
        assert message.headers == recipient.headers
        assert message.custom_args == {"digest_id": "42", "delivery_id": str(recipient.delivery_id)}


def test_custom_args_are_strings(fake: FakeSendGrid) -> None:
    # SendGrid rejects non-string custom_args; ids are integers in the ledger, strings on the wire.
    body = build_request_body(make_batch(make_recipients(3)))
    for person in body["personalizations"]:
        assert all(isinstance(value, str) for value in person["custom_args"].values())
    backend, _ = make_backend(fake.url)
    backend.send_batch(make_batch(make_recipients(3)))
    assert [m.custom_args["delivery_id"] for m in fake.accepted] == ["1000", "1001", "1002"]


def test_text_part_comes_before_html_part(fake: FakeSendGrid) -> None:
    # SendGrid requires text/plain before text/html in `content`.
    backend, _ = make_backend(fake.url)
    batch = make_batch(make_recipients(2))
    backend.send_batch(batch)
    content = fake.requests[0].envelope["content"]
    assert [part["type"] for part in content] == ["text/plain", "text/html"]
    assert [part["value"] for part in content] == [batch.text, batch.html]


def test_envelope_carries_sender_subject_category_and_keeps_our_unsubscribe(
    fake: FakeSendGrid,
) -> None:
    # The digest is tagged with its category, and SendGrid's own unsubscribe footer stays off.
    backend, _ = make_backend(fake.url)
    batch = make_batch(make_recipients(2))
    backend.send_batch(batch)
    envelope = fake.requests[0].envelope
    assert envelope["from"] == {"email": batch.from_email, "name": batch.from_name}
    assert envelope["subject"] == batch.subject
    assert envelope["categories"] == ["verdict-digest"]
    assert envelope["tracking_settings"] == {
        # Our own List-Unsubscribe handles unsubscribes; clicks only in the HTML part, whose own
        # links opt out one by one; the text part's links (unsubscribe included) stay as written.
        "subscription_tracking": {"enable": False},
        "click_tracking": {"enable": True, "enable_text": False},
        "open_tracking": {"enable": True},
    }


def test_a_test_send_is_categorised_as_test(fake: FakeSendGrid) -> None:
    # An editor's test send is distinguishable in SendGrid's statistics from the real issue.
    backend, _ = make_backend(fake.url)
    backend.send_batch(make_batch(make_recipients(1), is_test=True))
    assert fake.requests[0].envelope["categories"] == ["verdict-digest", "test"]


def test_name_with_comma_is_still_delivered(fake: FakeSendGrid) -> None:
    # SendGrid drops a message whose to.name holds a bare comma; the backend quotes such names.
    recipient = Recipient(
        delivery_id=1,
        email="jane@example.com",
        name='Doe, Jane "JD"',
        substitutions={},
        headers={},
    )
    backend, _ = make_backend(fake.url)
    backend.send_batch(make_batch([recipient]))
    assert [m.to for m in fake.accepted] == ["jane@example.com"]
    assert fake.accepted[0].name == '"Doe, Jane \\"JD\\""'
    assert fake.dropped == []


def test_empty_batch_makes_no_request(fake: FakeSendGrid) -> None:
    # Nothing to send means no call to the provider at all.
    backend, _ = make_backend(fake.url)
    result = backend.send_batch(make_batch([]))
    assert result.accepted == 0
    assert fake.requests == []


def test_message_id_is_the_providers_and_differs_per_batch(fake: FakeSendGrid) -> None:
    # The ledger stores X-Message-Id per batch; two batches must not share one.
    backend, _ = make_backend(fake.url)
    first = backend.send_batch(make_batch(make_recipients(2)))
    second = backend.send_batch(make_batch(make_recipients(2, start=2)))
    assert first.message_id and second.message_id
    assert first.message_id != second.message_id
    assert [r.message_id for r in fake.requests] == [first.message_id, second.message_id]


# Errors and retries ----------------------------------------------------------------------------


def test_rate_limit_waits_until_reset_then_succeeds(fake: FakeSendGrid) -> None:
    # A 429 is waited out until X-RateLimit-Reset, then the same batch is sent once more.
    backend, sleeps = make_backend(fake.url)
    fake.fail_next(1, 429, reset_in=3)
    result = backend.send_batch(make_batch(make_recipients(3)))
    assert result.accepted == 3
    assert [r.status for r in fake.requests] == [429, 202]
    assert len(sleeps.waits) == 1
    # The header holds whole epoch seconds, so the wait is between 2 and 3 seconds.
    assert 1.5 < sleeps.waits[0] <= 3.0
    assert len(fake.accepted) == 3


def test_rate_limit_wait_is_capped(fake: FakeSendGrid) -> None:
    # A far-away reset never stalls a run longer than the configured cap per attempt.
    backend, sleeps = make_backend(fake.url, max_rate_limit_wait_seconds=0.25, max_attempts=2)
    fake.fail_next(2, 429, reset_in=3600)
    with pytest.raises(TransientSendError) as caught:
        backend.send_batch(make_batch(make_recipients(1)))
    assert sleeps.waits == [0.25]
    assert caught.value.retry_after is not None and caught.value.retry_after > 3000
    assert fake.accepted == []


def test_server_errors_are_retried_then_reported_transient(fake: FakeSendGrid) -> None:
    # 5xx answers are retried with growing, jittered waits up to max_attempts, then give up.
    backend, sleeps = make_backend(
        fake.url, max_attempts=4, backoff_base_seconds=1.0, backoff_max_seconds=3.0
    )
    fake.always(Fault(status=500))
    with pytest.raises(TransientSendError) as caught:
        backend.send_batch(make_batch(make_recipients(2)))
    assert [r.status for r in fake.requests] == [500] * 4
    assert len(sleeps.waits) == 3
    for wait, ceiling in zip(sleeps.waits, [1.0, 2.0, 3.0], strict=True):
        assert 0.0 <= wait <= ceiling
    assert "after 4 attempt(s)" in str(caught.value)
    assert "HTTP 500" in str(caught.value)
    assert fake.accepted == []


def test_a_passing_server_error_is_retried_to_success(fake: FakeSendGrid) -> None:
    # A 503 followed by a 202 delivers the batch exactly once.
    backend, _ = make_backend(fake.url)
    fake.fail_next(2, 503)
    result = backend.send_batch(make_batch(make_recipients(4)))
    assert result.accepted == 4
    assert [r.status for r in fake.requests] == [503, 503, 202]
    assert len(fake.accepted) == 4


def test_dropped_connection_is_retried(fake: FakeSendGrid) -> None:
    # A connection closed without an answer is a transient failure, retried.
    backend, sleeps = make_backend(fake.url)
    fake.drop_next(1)
    result = backend.send_batch(make_batch(make_recipients(3)))
    assert result.accepted == 3
    assert [r.status for r in fake.requests] == [None, 202]
    assert len(sleeps.waits) == 1
    assert len(fake.accepted) == 3


def test_lost_answer_after_acceptance_is_retried_and_provider_holds_two_copies(
    fake: FakeSendGrid,
) -> None:
    # An answer lost after SendGrid accepted is indistinguishable from a failure: the retry
    # duplicates at the provider, which is why the ledger must call such rows uncertain.
    backend, _ = make_backend(fake.url)
    fake.drop_next(1, after_record=True)
    backend.send_batch(make_batch(make_recipients(2)))
    assert [m.to for m in fake.accepted] == [
        "reader0@example.com",
        "reader1@example.com",
    ] * 2


def test_connection_drops_every_time_ends_transient(fake: FakeSendGrid) -> None:
    # Persistent dropped connections exhaust the attempts and leave a transient error.
    backend, _ = make_backend(fake.url, max_attempts=3)
    fake.always(Fault(drop=True))
    with pytest.raises(TransientSendError) as caught:
        backend.send_batch(make_batch(make_recipients(1)))
    assert len(fake.requests) == 3
    assert "closed the connection" in str(caught.value)


def test_slow_answer_beyond_timeout_is_transient(fake: FakeSendGrid) -> None:
    # A server that does not answer within the timeout cannot hang the run.
    backend, _ = make_backend(fake.url, timeout=0.3, max_attempts=2)
    fake.set_delay(1.5)
    with pytest.raises(TransientSendError) as caught:
        backend.send_batch(make_batch(make_recipients(1)))
    assert "no answer within 0.3 s" in str(caught.value)
    assert len(fake.requests) == 2


def test_connection_refused_is_transient() -> None:
    # Nothing listening at the host is retried and reported as transient, not a crash.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    backend, sleeps = make_backend(f"http://127.0.0.1:{port}", max_attempts=2)
    with pytest.raises(TransientSendError) as caught:
        backend.send_batch(make_batch(make_recipients(1)))
    assert "connection refused" in str(caught.value)
    assert len(sleeps.waits) == 1


def test_bad_request_is_permanent_with_sendgrids_message(fake: FakeSendGrid) -> None:
    # A 400 is not retried and carries SendGrid's own explanation for the failed rows.
    backend, sleeps = make_backend(fake.url)
    fake.fail_next(1, 400, message="The content value must be a string at least one character")
    with pytest.raises(PermanentSendError) as caught:
        backend.send_batch(make_batch(make_recipients(2)))
    assert "The content value must be a string at least one character" in caught.value.reason
    assert len(fake.requests) == 1
    assert sleeps.waits == []


def test_validation_failure_is_permanent_and_names_the_field(fake: FakeSendGrid) -> None:
    # A batch SendGrid's validation refuses (same address twice) fails for good, with the field.
    recipients = make_recipients(2)
    twin = Recipient(5, recipients[0].email.upper(), None, {}, {})
    backend, _ = make_backend(fake.url)
    with pytest.raises(PermanentSendError) as caught:
        backend.send_batch(make_batch([*recipients, twin]))
    assert "duplicate" in caught.value.reason
    assert "personalizations.2" in caught.value.reason
    assert fake.accepted == []


def encoded(batch: OutgoingBatch) -> OutgoingBatch:
    """The batch with its recipients encoded by the backend's encoder, as the building process
    hands them to a large send."""
    recipients = EncodedRecipients.encode(
        SendGridBackend.recipient_encoder, batch.digest_id, batch.recipients
    )
    return replace(batch, recipients=[], encoded=recipients)


def test_recipients_encoded_elsewhere_make_the_same_request(fake: FakeSendGrid) -> None:
    plain = make_batch(make_recipients(3), provider_batch=None)
    assert request_body(encoded(plain)) == request_body(plain)
    backend, _ = make_backend(fake.url)
    result = backend.send_batch(encoded(plain))
    assert result.accepted == 3
    assert [m.to for m in fake.accepted] == [f"reader{i}@example.com" for i in range(3)]
    assert encoded(plain).delivery_ids == plain.delivery_ids == [1000, 1001, 1002]
    assert encoded(plain).without_unsubscribe_headers == plain.without_unsubscribe_headers == 0


def test_a_400_blames_the_right_row_of_an_encoded_batch(fake: FakeSendGrid) -> None:
    recipients = make_recipients(3)
    twin = Recipient(5, recipients[1].email.upper(), None, {}, {})
    backend, _ = make_backend(fake.url)
    with pytest.raises(PermanentSendError) as caught:
        backend.send_batch(encoded(make_batch([*recipients, twin])))
    assert list(caught.value.refused) == [5]
    assert fake.accepted == []


def test_a_batch_is_never_both_encoded_and_not() -> None:
    batch = make_batch(make_recipients(2))
    with pytest.raises(ValueError, match="either encoded or not"):
        replace(batch, encoded=encoded(batch).encoded)


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_key_stops_at_once(fake: FakeSendGrid, status: int) -> None:
    # 401/403 is never retried: it raises SendAuthError naming SENDGRID_API_KEY as the fix.
    backend, sleeps = make_backend(fake.url)
    fake.fail_next(1, status, message="authorization required")
    with pytest.raises(SendAuthError) as caught:
        backend.send_batch(make_batch(make_recipients(1)))
    assert "SendGrid rejected the API key" in str(caught.value)
    assert "SENDGRID_API_KEY" in str(caught.value)
    assert len(fake.requests) == 1
    assert sleeps.waits == []


def test_wrong_key_is_rejected_by_the_fake_and_reported(fake: FakeSendGrid) -> None:
    # A key the server does not know is a SendAuthError, and nothing is accepted.
    backend, _ = make_backend(fake.url, key="SG.not-the-right-key")
    with pytest.raises(SendAuthError):
        backend.send_batch(make_batch(make_recipients(1)))
    assert fake.accepted == []


def test_wrong_host_path_is_transient_and_names_the_setting(fake: FakeSendGrid) -> None:
    # A 404 means DIGEST_SENDGRID_HOST is wrong: rows stay unsent (transient), no retry storm.
    backend, sleeps = make_backend(fake.url + "/not-sendgrid")
    with pytest.raises(TransientSendError) as caught:
        backend.send_batch(make_batch(make_recipients(1)))
    assert "DIGEST_SENDGRID_HOST" in str(caught.value)
    assert len(fake.requests) == 0
    assert sleeps.waits == []


def test_missing_key_is_a_config_error_naming_the_variable() -> None:
    # The sendgrid backend refuses to start without a key, saying which variable to set.
    with pytest.raises(ConfigError) as caught:
        SendGridBackend(make_settings("http://127.0.0.1:9", key=None))
    assert "SENDGRID_API_KEY" in str(caught.value)


def test_api_key_never_leaks(fake: FakeSendGrid, caplog: pytest.LogCaptureFixture) -> None:
    # On every error path the key is absent from str/repr of the error, the logs and the repr.
    caplog.set_level(logging.DEBUG)
    with FakeSendGrid(LEAKY_KEY) as server:
        backend, _ = make_backend(server.url, key=LEAKY_KEY, max_attempts=2, timeout=0.3)
        batch = make_batch(make_recipients(2))
        errors: list[BaseException] = []
        scenarios = [
            Fault(status=401, message=f"bad key Bearer {LEAKY_KEY}"),
            Fault(status=403),
            Fault(status=400, message=f"echo {LEAKY_KEY}"),
            Fault(status=429, reset_in=0),
            Fault(status=500, message=LEAKY_KEY),
            Fault(drop=True),
            Fault(delay=1.0),
        ]
        for scenario in scenarios:
            server.clear_faults()
            server.always(scenario)
            with pytest.raises((SendAuthError, PermanentSendError, TransientSendError)) as caught:
                backend.send_batch(batch)
            errors.append(caught.value)
        server.clear_faults()
        backend.send_batch(batch)  # the success path logs too
    refused, _ = make_backend("http://127.0.0.1:9", key=LEAKY_KEY, max_attempts=1)
    with pytest.raises(TransientSendError) as refused_error:
        refused.send_batch(batch)
    errors.append(refused_error.value)
    assert len(errors) == len(scenarios) + 1
    for error in errors:
        assert LEAKY_KEY not in str(error)
        assert LEAKY_KEY not in repr(error)
        assert LEAKY_KEY not in str(error.__cause__)
    logged = caplog.text + "".join(str(record.__dict__) for record in caplog.records)
    assert "HTTP Request: POST" in logged  # the transport's DEBUG and INFO lines were seen
    assert LEAKY_KEY not in logged
    assert LEAKY_KEY not in repr(backend)
    with pytest.raises(TypeError):
        pickle.dumps(backend)


# The fake's own validation -----------------------------------------------------------------------


def assert_refused(url: str, body: dict[str, Any], fragment: str) -> None:
    with pytest.raises(BadRequestsError) as caught:
        raw_post(url, body)
    message = caught.value.to_dict["errors"][0]["message"]
    assert fragment in message, message


def test_fake_refuses_more_than_1000_personalizations(fake: FakeSendGrid) -> None:
    # SendGrid allows at most 1,000 personalizations per request; 1,000 itself is fine.
    people = [one_person(f"p{i}@example.com") for i in range(1001)]
    assert_refused(fake.url, minimal_body(people), "more than 1000")
    assert raw_post(fake.url, minimal_body(people[:1000])).status_code == 202


def test_fake_refuses_more_than_1000_recipients(fake: FakeSendGrid) -> None:
    # The 1,000 limit counts to + cc + bcc across all personalizations.
    people = [
        one_person(f"p{i}@example.com", cc=[{"email": f"c{i}@example.com"}]) for i in range(501)
    ]
    assert_refused(fake.url, minimal_body(people), "recipients")


def test_fake_refuses_an_address_twice_in_one_request(fake: FakeSendGrid) -> None:
    # An address may appear once per request, compared case-insensitively.
    people = [one_person("Same@Example.com"), one_person("same@example.COM")]
    assert_refused(fake.url, minimal_body(people), "duplicate")


@pytest.mark.parametrize("field", ["custom_args", "headers", "substitutions"])
def test_fake_refuses_non_string_values(fake: FakeSendGrid, field: str) -> None:
    # custom_args, headers and substitutions values must be strings.
    people = [one_person("a@example.com", **{field: {"delivery_id": 17}})]
    assert_refused(fake.url, minimal_body(people), "Expected: string")


def test_fake_refuses_html_before_text(fake: FakeSendGrid) -> None:
    # text/plain must come first when both parts are present.
    content = [{"type": "text/html", "value": "<p>x</p>"}, {"type": "text/plain", "value": "x"}]
    body = minimal_body([one_person("a@example.com")], content=content)
    assert_refused(fake.url, body, "text/plain must be first")


def test_fake_refuses_missing_sender_subject_and_many_categories(fake: FakeSendGrid) -> None:
    # from.email, a subject and at most 10 categories are required, as by SendGrid.
    people = [one_person("a@example.com")]
    no_from = minimal_body(people)
    del no_from["from"]
    assert_refused(fake.url, no_from, "from object")
    no_subject = minimal_body(people)
    del no_subject["subject"]
    assert_refused(fake.url, no_subject, "subject is required")
    per_person_subject = minimal_body([one_person("a@example.com", subject="Hi")])
    del per_person_subject["subject"]
    assert raw_post(fake.url, per_person_subject).status_code == 202
    many = minimal_body(people, categories=[f"c{i}" for i in range(11)])
    assert_refused(fake.url, many, "categories")


def test_fake_refuses_a_wrong_key(fake: FakeSendGrid) -> None:
    # Only `Bearer <configured key>` is accepted, answered with SendGrid's error shape.
    with pytest.raises(UnauthorizedError) as caught:
        raw_post(fake.url, minimal_body([one_person("a@example.com")]), key="SG.other")
    assert set(caught.value.to_dict["errors"][0]) == {"message", "field", "help"}
    assert fake.accepted == []


def test_fake_drops_bare_comma_names_like_sendgrid(fake: FakeSendGrid) -> None:
    # SendGrid answers 202 but never delivers to a to.name with a bare comma; so does the fake.
    people = [{"to": [{"email": "jane@example.com", "name": "Doe, Jane"}]}]
    assert raw_post(fake.url, minimal_body(people)).status_code == 202
    assert fake.accepted == []
    assert [m.to for m in fake.dropped] == ["jane@example.com"]


def test_fake_record_file_holds_one_line_per_accepted_personalization(
    fake: FakeSendGrid, tmp_path: Path
) -> None:
    # Another process reads what was accepted from the record file, one JSON line each.
    backend, _ = make_backend(fake.url)
    fake.fail_next(1, 500)
    backend.send_batch(make_batch(make_recipients(3)))
    lines = read_record(tmp_path / "record.jsonl")
    assert [line["to"] for line in lines] == [f"reader{i}@example.com" for i in range(3)]
    assert lines[0]["custom_args"] == {"digest_id": "42", "delivery_id": "1000"}
    assert lines[0]["message_id"] == fake.requests[-1].message_id


def test_fake_as_a_process_is_driven_through_its_control_endpoint(tmp_path: Path) -> None:
    # The out-of-process fake prints its URL, obeys injected faults and records to its file.
    record = tmp_path / "process.jsonl"
    with FakeSendGridProcess(API_KEY, record) as process:
        process.control.queue(Fault(status=503), Fault(status=429, reset_in=0))
        backend, sleeps = make_backend(process.url)
        result = backend.send_batch(make_batch(make_recipients(4)))
        backend.new_batch_id()
        stats = process.control.stats()
    assert result.accepted == 4
    assert stats == {
        "requests": 3,
        "accepted_requests": 1,
        "accepted": 4,
        "dropped": 0,
        "queued_faults": 0,
        "batch_ids": 1,
        # The three tries went over one kept-alive connection; the batch id's call, opening the
        # client again, and the two control calls made one each.
        "connections": 4,
    }
    assert len(sleeps.waits) == 2
    assert [line["to"] for line in read_record(record)] == [
        f"reader{i}@example.com" for i in range(4)
    ]


def test_debug_logging_shows_no_address_or_token(
    fake: FakeSendGrid, caplog: pytest.LogCaptureFixture
) -> None:
    # At DEBUG the transport logs every request's progress; never a body, an address or a token.
    caplog.set_level(logging.DEBUG)
    backend, _ = make_backend(fake.url)
    recipients = make_recipients(3)
    backend.send_batch(make_batch(recipients))
    assert len(fake.accepted) == 3  # the body the log leaves out still reached the API intact
    logged = caplog.text
    assert "send_request_body" in logged  # the transport's DEBUG lines were seen
    for recipient in recipients:
        assert recipient.email not in logged
        assert recipient.substitutions["%%unsubscribe_url%%"] not in logged


# Scheduled sends: batch ids, send_at, cancels ------------------------------------------------


def _held(backend: SendGridBackend, seconds: int = 900) -> ProviderBatch:
    send_at = datetime.now(UTC) + timedelta(seconds=seconds)
    return ProviderBatch(backend.new_batch_id(), send_at, send_at - timedelta(seconds=630))


def test_the_fake_refuses_an_unknown_batch_id_and_a_send_at_past_72_hours(
    fake: FakeSendGrid,
) -> None:
    # As SendGrid: a batch id must be one the account made, send_at at most 72 h ahead; a 400
    # that names the field.
    with pytest.raises(BadRequestsError) as unknown:
        raw_post(fake.url, minimal_body([one_person("a@example.com")], batch_id="nope"))
    assert '"field": "batch_id"' in unknown.value.body.decode()
    backend, _ = make_backend(fake.url)
    batch_id = backend.new_batch_id()
    far = int(datetime.now(UTC).timestamp()) + 73 * 3600
    with pytest.raises(BadRequestsError) as too_far:
        raw_post(
            fake.url, minimal_body([one_person("a@example.com")], batch_id=batch_id, send_at=far)
        )
    assert '"field": "send_at"' in too_far.value.body.decode()
    assert fake.accepted == []


def test_a_held_batch_carries_its_batch_id_and_send_at_and_a_confirmed_cancel_stops_it(
    fake: FakeSendGrid,
) -> None:
    # The request names its batch and time; after cancel_batch (read back by GET) nothing of it
    # is delivered, and cancelling again (a lost answer to the first) is confirmed too.
    backend, _ = make_backend(fake.url)
    held = _held(backend)
    with backend:
        backend.send_batch(make_batch(make_recipients(3), provider_batch=held))
        assert [m.batch_id for m in fake.accepted] == [held.id] * 3
        assert {m.send_at for m in fake.accepted} == {int(held.send_at.timestamp())}
        backend.cancel_batch(held.id)
        backend.cancel_batch(held.id)
    assert fake.statuses == {held.id: "cancel"} and fake.delivered == []
    methods = [(method, status) for method, _, status in fake.calls]
    assert methods.count(("POST", 201)) == 2  # the batch id and the first cancel
    assert ("POST", 400) in methods and ("GET", 200) in methods


def test_a_cancel_too_close_to_send_at_is_refused(fake: FakeSendGrid) -> None:
    # Within the deadline SendGrid refuses the cancel: CancelRefusedError, and the mail goes.
    backend, _ = make_backend(fake.url)
    held = _held(backend, seconds=300)  # inside SendGrid's 600 s
    backend.send_batch(make_batch(make_recipients(2), provider_batch=held))
    with pytest.raises(CancelRefusedError, match="600 seconds before its send_at"):
        backend.cancel_batch(held.id)
    assert len(fake.delivered) == 2


def test_at_most_ten_batches_are_cancelled_at_once_and_a_forgotten_cancel_frees_a_slot(
    fake: FakeSendGrid,
) -> None:
    # The eleventh cancel is refused; removing a cancel whose send time has passed frees a slot,
    # and its messages stay discarded.
    backend, _ = make_backend(fake.url)
    fake.set_cancel_deadline(0)
    past = _held(backend, seconds=3)  # long enough to be cancelled on a loaded machine
    backend.send_batch(make_batch(make_recipients(1), provider_batch=past))
    backend.cancel_batch(past.id)
    for _ in range(9):
        backend.cancel_batch(_held(backend).id)
    eleventh = _held(backend)
    with pytest.raises(CancelRefusedError, match="more than 10 batches"):
        backend.cancel_batch(eleventh.id)
    fake_clock_passes = past.send_at.timestamp() + 0.1 - datetime.now(UTC).timestamp()
    time.sleep(max(0.0, fake_clock_passes))
    backend.forget_cancel(past.id)
    backend.cancel_batch(eleventh.id)
    assert len(fake.statuses) == 10 and past.id not in fake.statuses
    assert fake.delivered == []  # the forgotten cancel did its work at send time


def test_an_ambiguous_answer_to_a_held_batch_is_never_retried_blind(fake: FakeSendGrid) -> None:
    # A dropped connection after SendGrid took the request: AmbiguousSendError at once, one
    # request, so the sender can cancel; a refused connection is still retried.
    backend, sleeps = make_backend(fake.url)
    fake.lose_answers(1)
    with pytest.raises(AmbiguousSendError, match="may or may not"):
        backend.send_batch(make_batch(make_recipients(2), provider_batch=_held(backend)))
    assert len(fake.requests) == 1 and sleeps.waits == []
    fake.queue(Fault(status=503))
    with pytest.raises(AmbiguousSendError, match="HTTP 503"):
        backend.send_batch(make_batch(make_recipients(2), provider_batch=_held(backend)))
    assert len(fake.requests) == 2


def test_a_paused_batch_is_turned_into_a_confirmed_cancel(fake: FakeSendGrid) -> None:
    # A batch someone paused already has a status: the cancel PATCHes it and reads it back.
    backend, _ = make_backend(fake.url)
    held = _held(backend)
    backend.send_batch(make_batch(make_recipients(2), provider_batch=held))
    client = sendgrid.SendGridAPIClient(API_KEY, host=fake.url).client
    client.user.scheduled_sends.post(request_body={"batch_id": held.id, "status": "pause"})
    backend.cancel_batch(held.id)
    assert fake.statuses == {held.id: "cancel"} and fake.delivered == []
    assert ("PATCH", f"/v3/user/scheduled_sends/{held.id}", 204) in fake.calls
