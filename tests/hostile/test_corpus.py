"""The hostile corpus: every input of the JSON files beside this module goes through the door it
would come in by (catalog import, subscriber import, `digest web`, the webhook, the feed) and gets
a 4xx, a sentence, or a warning with the cleaned value stored. Add a case to a file, not code.

- catalog_records.json: one record each, on top of a valid one; "refused" (the sentence's
  fragments), "cleaned" (the warning's fragments, the stored values) or "kept" (stored as sent,
  no warning);
- catalog_documents.json: whole files refused with a sentence;
- subscriber_rows.json: one CSV row each, "refused" or "imported" (stored values);
- web_requests.json: raw HTTP requests and the status `digest web` answers; `{purpose:id}` is a
  validly signed token for that id, `{kilobytes:n}` that many kilobytes of filler;
- webhook_events.json: a signed SendGrid event for Ada's delivery from another address;
- feed_encodings.json: Content-Encoding headers a feed may send, and the sentence sync says.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import insert
from sqlmodel import Session, select

from digest.audience.csv_files import import_subscribers
from digest.catalog.feed import FeedClient, Validators, locate
from digest.catalog.importer import import_catalog, load_tools
from digest.config import Settings, get_settings
from digest.db import ensure_schema, get_engine, session_scope
from digest.errors import CatalogFeedError, ImportFileError
from digest.models import Delivery, Digest, Subscriber
from digest.tokens import Purpose, make_token
from digest.webhooks.sendgrid import SIGNATURE_HEADER, TIMESTAMP_HEADER
from tests.support.factories import tool_dict, write_subscribers
from tests.support.web_server import Start, served_apps

HERE = Path(__file__).parent


def _cases(name: str) -> list[Any]:
    cases = json.loads((HERE / f"{name}.json").read_text(encoding="utf-8"))
    return [pytest.param(case, id=case["id"]) for case in cases]


@pytest.fixture
def engine(sqlite_url: str) -> Any:
    return ensure_schema(sqlite_url)


# -- the catalog ----------------------------------------------------------------------------------


def _import_record(engine: Any, tmp_path: Path, overrides: dict[str, Any]) -> Any:
    record = {**tool_dict("corpus-tool"), **overrides}
    path = tmp_path / "catalog.json"
    document = {"format": "verdict-digest/catalog@1", "tools": [record]}
    path.write_text(json.dumps(document), encoding="utf-8")
    with session_scope(engine) as session:
        return import_catalog(session=session, path=path)


@pytest.mark.parametrize("case", _cases("catalog_records"))
def test_catalog_record(engine: Any, tmp_path: Path, case: dict[str, Any]) -> None:
    # Every hostile record is refused with a sentence, or imported cleaned with a warning, and
    # legitimate text is imported exactly as written.
    if case["expect"] == "refused":
        with pytest.raises(ImportFileError) as caught:
            _import_record(engine, tmp_path, case["record"])
        told = "\n".join([str(caught.value), *caught.value.problems])
        for fragment in case["fragments"]:
            assert fragment in told, told
        with Session(engine) as session:
            assert load_tools(session) == []
        return
    report = _import_record(engine, tmp_path, case["record"])
    with Session(engine) as session:
        (tool,) = load_tools(session)
    if case["expect"] == "kept":
        assert report.warnings == []
        for field, value in case["record"].items():
            assert getattr(tool, field) == value
        return
    warned = "\n".join(report.warnings)
    for fragment in case["fragments"]:
        assert fragment in warned, warned
    for field, value in case["stored"].items():
        stored = getattr(tool, field)
        assert (list(stored) if isinstance(stored, tuple) else stored) == value


@pytest.mark.parametrize("case", _cases("catalog_documents"))
def test_catalog_document(engine: Any, tmp_path: Path, case: dict[str, Any]) -> None:
    # A hostile file as a whole is refused with a sentence; nothing is imported.
    path = tmp_path / "catalog.json"
    path.write_text(case["text"], encoding="utf-8")
    with pytest.raises(ImportFileError) as caught, session_scope(engine) as session:
        import_catalog(session=session, path=path)
    for fragment in case["fragments"]:
        assert fragment in str(caught.value)


# -- subscribers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", _cases("subscriber_rows"))
def test_subscriber_row(engine: Any, tmp_path: Path, case: dict[str, Any]) -> None:
    # A hostile row stops the file with its line and field named; an odd but honest one lands.
    path = write_subscribers(tmp_path / "people.csv", [case["row"]])
    if case["expect"] == "refused":
        with pytest.raises(ImportFileError) as caught, session_scope(engine) as session:
            import_subscribers(session=session, path=path)
        told = "\n".join([str(caught.value), *caught.value.problems])
        for fragment in case["fragments"]:
            assert fragment in told, told
        return
    with session_scope(engine) as session:
        import_subscribers(session=session, path=path)
    with Session(engine) as session:
        (person,) = session.exec(select(Subscriber)).all()
    for field, value in case["stored"].items():
        assert getattr(person, field) == value


# -- digest web -----------------------------------------------------------------------------------


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Iterator[Start]:
    with served_apps(monkeypatch) as start:
        yield start


_PURPOSES = {"unsubscribe": Purpose.UNSUBSCRIBE, "preferences": Purpose.PREFERENCES}


def _request(template: str, key: bytes) -> bytes:
    def fill(match: re.Match[str]) -> str:
        kind, value = match.group(1), int(match.group(2))
        if kind == "kilobytes":
            return "x" * 1024 * value
        return make_token(key, _PURPOSES[kind], value)

    return re.sub(r"\{(\w+):(\d+)\}", fill, template).encode("latin-1")


@pytest.mark.parametrize("case", _cases("web_requests"))
def test_web_request(serve: Start, settings: Settings, case: dict[str, Any]) -> None:
    # A real server, a raw request: the status is a 4xx (or the page), never a 500 or a reset.
    port = serve()
    raw = _request(case["request"], get_settings().signing_key())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(raw)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    assert answer.split(b" ", 2)[1] == str(case["status"]).encode(), answer[:300]


# -- the webhook ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", _cases("webhook_events"))
def test_webhook_event(
    serve: Start, settings: Settings, monkeypatch: pytest.MonkeyPatch, case: dict[str, Any]
) -> None:
    # A signed event naming Ada's delivery applies only if its address is Ada's.
    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    port = serve(DIGEST_SENDGRID_WEBHOOK_PUBLIC_KEY=base64.b64encode(public).decode())
    engine = get_engine(settings.database_url)
    delivery_id = _ada_delivery(engine)
    event: dict[str, Any] = {
        "event": case["event"],
        "sg_event_id": f"corpus-{case['id']}",
        "timestamp": int(time.time()),
        "delivery_id": str(delivery_id),
    }
    if case["email"] is not None:
        event["email"] = case["email"]
    body = json.dumps([event]).encode()
    stamp = str(int(time.time()))
    signature = private.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    head = (
        f"POST /webhooks/sendgrid HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"{SIGNATURE_HEADER}: {base64.b64encode(signature).decode()}\r\n"
        f"{TIMESTAMP_HEADER}: {stamp}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head.encode() + body)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    summary = json.loads(answer.partition(b"\r\n\r\n")[2])
    assert (summary["mismatched_email"], summary["suppressed"]) == (
        case["mismatched"],
        case["suppressed"],
    )


def _ada_delivery(engine: Any) -> int:
    moment = datetime.now(UTC)
    with engine.begin() as connection:
        subscriber = connection.execute(
            insert(Subscriber)
            .values(
                email="ada@example.com",
                email_key="ada@example.com",
                categories=[],
                status="active",
                created_at=moment,
            )
            .returning(Subscriber.id)  # type: ignore[arg-type]
        ).scalar_one()
        digest = connection.execute(
            insert(Digest)
            .values(week="2026-W47", subject="S", content={}, created_at=moment)
            .returning(Digest.id)  # type: ignore[arg-type]
        ).scalar_one()
        return int(
            connection.execute(
                insert(Delivery)
                .values(
                    digest_id=digest,
                    subscriber_id=subscriber,
                    state="sent",
                    attempts=1,
                    updated_at=moment,
                )
                .returning(Delivery.id)  # type: ignore[arg-type]
            ).scalar_one()
        )


# -- the catalog feed -----------------------------------------------------------------------------


def _feed_body(layers: int) -> bytes:
    document = json.dumps({"format": "verdict-digest/catalog@1", "tools": []}).encode()
    if layers == 0:
        return document  # declared as encoded, but not
    if layers < 0:
        return gzip.compress(document * 50)[:40]  # a gzip stream cut short
    body = zlib.compress(document)
    for _ in range(layers - 1):
        body = gzip.compress(body)
    return body


@pytest.mark.parametrize("case", _cases("feed_encodings"))
def test_feed_encoding(case: dict[str, Any]) -> None:
    # Whatever a feed says it is encoded with, sync either reads it within the cap or says why.
    body = _feed_body(case["layers"])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Encoding", case["coding"])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = FeedClient(timeout_seconds=10, max_bytes=1_000_000, max_attempts=1)
        location = locate(f"http://127.0.0.1:{server.server_address[1]}/feed", "--url")
        with pytest.raises(CatalogFeedError) as caught:
            client.fetch(location, Validators())
    finally:
        server.shutdown()
        server.server_close()
    for fragment in [*case["fragments"], "nothing was imported"]:
        assert fragment in str(caught.value)
