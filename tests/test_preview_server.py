"""The editor's preview server: what it shows, that it re-renders, and how it reports failures."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from digest.errors import DigestError, TemplateError
from digest.preview.server import PreviewBundle, PreviewServer, start_preview


class FileRenderer:
    """Renders from a file on disk, as the real preview renders from templates and the database."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.calls = 0

    def __call__(self) -> PreviewBundle:
        self.calls += 1
        body = self.source.read_text(encoding="utf-8")
        if body.startswith("BROKEN"):
            raise TemplateError("Template partials/footer.mjml.j2, line 3: unexpected '}'. Fix it.")
        return PreviewBundle(
            subject=f"Subject {body}",
            html=f"<!doctype html><html><body><p>{body}</p></body></html>",
            text=f"Text {body}\n",
            headers={
                "From": "Verdict Digest <digest@verdicts.example.com>",
                "List-Unsubscribe": "<https://verdicts.example.com/u/tok>",
                "X-Note": "<script>alert(1)</script>",
            },
        )


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "body.txt"
    path.write_text("first version", encoding="utf-8")
    return path


@pytest.fixture
def server(source: Path) -> Iterator[tuple[PreviewServer, FileRenderer]]:
    renderer = FileRenderer(source)
    with start_preview(renderer) as running:
        yield running, renderer


def test_preview_listens_only_on_loopback_by_default(
    server: tuple[PreviewServer, FileRenderer],
) -> None:
    # A preview shows real tokens and addresses; it must not be reachable from the network.
    running, _ = server
    assert running.url.startswith("http://127.0.0.1:")


def test_page_shows_subject_headers_html_and_text(
    server: tuple[PreviewServer, FileRenderer],
) -> None:
    # The editor sees every part of the message on one page, with header values escaped.
    running, _ = server
    page = httpx.get(running.url)
    assert page.status_code == 200
    body = page.text
    assert "Subject first version" in body
    assert "List-Unsubscribe" in body and "&lt;https://verdicts.example.com/u/tok&gt;" in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    assert "<script>alert(1)</script>" not in body
    assert "Text first version" in body
    assert 'srcdoc="&lt;!doctype html&gt;' in body
    assert 'sandbox="allow-popups' in body
    assert httpx.get(running.url + "email.html").text.endswith("<p>first version</p></body></html>")
    text = httpx.get(running.url + "email.txt")
    assert text.text == "Text first version\n"
    assert text.headers["content-type"].startswith("text/plain")


def test_every_request_renders_afresh(
    server: tuple[PreviewServer, FileRenderer], source: Path
) -> None:
    # An edited template or database must show on reload without restarting the server.
    running, renderer = server
    before = httpx.get(running.url + "fingerprint").text
    source.write_text("second version", encoding="utf-8")
    after = httpx.get(running.url + "fingerprint").text
    assert before != after
    assert "Subject second version" in httpx.get(running.url).text
    assert renderer.calls == 3


def test_render_failure_is_shown_and_the_server_recovers(
    server: tuple[PreviewServer, FileRenderer], source: Path
) -> None:
    # A template error appears on the page as its message; fixing it brings the preview back.
    running, _ = server
    source.write_text("BROKEN", encoding="utf-8")
    failed = httpx.get(running.url)
    assert failed.status_code == 500
    assert "partials/footer.mjml.j2, line 3" in failed.text
    assert "Traceback" not in failed.text
    assert httpx.get(running.url + "fingerprint").status_code == 500
    source.write_text("fixed version", encoding="utf-8")
    assert "Subject fixed version" in httpx.get(running.url).text


def test_unknown_paths_are_not_found(server: tuple[PreviewServer, FileRenderer]) -> None:
    # Only the preview's own pages exist; nothing else on disk is served.
    running, renderer = server
    assert httpx.get(running.url + "../../etc/passwd").status_code == 404
    assert httpx.get(running.url + "templates/digest.mjml.j2").status_code == 404
    assert renderer.calls == 0


def test_a_busy_port_is_a_clear_error(source: Path) -> None:
    # Starting on a port someone else holds explains itself instead of raising OSError.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(DigestError, match=f"127.0.0.1:{port}"):
            PreviewServer(FileRenderer(source), port=port)
